#!/usr/bin/env python
"""Finding 1: MI trends over training agree on clean and on adversarial inputs (NT and AT alike).

Trains NT and PGD-AT copies of a model from the same initial weights and measures I(X;T) and
I(T;Y) of every probe (KDE upper/lower bounds, binning) at epoch 0 and after every epoch on one
fixed draw of test images, clean and adversarial (exactly the measurements of finding 2), or
reads them from a finished finding-2 run (--from-run DIR, no training). For every estimator,
mode, quantity and probe it correlates the clean and the adversarial curve over epochs
(Pearson, Spearman), records the mean gap in bits, and states whether the trends agree.

  python experiments/finding1_mi_trends.py --preset cpu
  python experiments/finding1_mi_trends.py --preset cpu --dataset cifar10 \\
      --data-dir ../shared/data/cifar10-jpeg
  python experiments/finding1_mi_trends.py --from-run runs/finding2_mnist_lenet  # reuse finding 2's measurements (seconds)
  python experiments/finding1_mi_trends.py --preset smoke                        # seconds; what the tests run
  python experiments/finding1_mi_trends.py                                       # the paper's 200 epochs (accelerator)

Presets: paper (200 epochs), cpu (20 epochs at lr 0.025, as finding 2's), smoke (2 epochs on 512
images, 128-image MI draw). Output in --out (default runs/finding1_<dataset>_<model>):
summary.json (the run's measurements under "run", as finding 2's; "verdicts", "evidence"),
trend_agreement_*.png, info_plane_*.png, trajectories_*.png, training_curves.png; timing.json.
"""

import sys

from jaxmi import cli
from jaxmi.findings import finding1


def main(argv=None) -> int:
    return cli.main(finding1.FINDING, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
