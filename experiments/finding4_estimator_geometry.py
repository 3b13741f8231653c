#!/usr/bin/env python
"""Finding 4: what the KDE and binning estimators measure is the geometry of a layer's output.

Controlled layers (Gaussian class clusters; one factor varied at a time: scaling the output by c,
moving the classes apart, shrinking them, changing the width) and the probes of trained NT and
AT models (trained here, or loaded from a finished run with --from-run DIR) are measured with the
KDE upper/lower bounds and binning, next to geometry statistics: the median pairwise squared
distance relative to the kernel scale (2σ² / 8σ²), between- vs within-class distances, and the
number of occupied bins. The verdicts are the Spearman correlations between each estimator and
the statistic it should track.

  python experiments/finding4_estimator_geometry.py --preset cpu
  python experiments/finding4_estimator_geometry.py --from-run runs/finding1_mnist_lenet   # reuse trained models
  python experiments/finding4_estimator_geometry.py --preset smoke   # seconds; what the tests run
  python experiments/finding4_estimator_geometry.py                  # 200-epoch models, 5,000-image probes (accelerator)

Output in --out (default runs/finding4_<dataset>_<model>): summary.json ("results" with
"layers_measured", every estimate and geometry statistic; "verdicts", "evidence"), geometry_scatter.png,
geometry_sweeps.png; timing.json.
"""

import sys

from jaxmi import cli
from jaxmi.findings import finding4


def main(argv=None) -> int:
    return cli.main(finding4.FINDING, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
