#!/usr/bin/env python
"""Finding 2: AT is harder than NT, and AT layers carry less information about the input.

Trains a normally trained (NT) and a PGD adversarially trained (AT) network from the same
initial weights, measures I(X;T) and I(T;Y) of every probe layer (KDE upper/lower bounds and
binning) on clean and adversarial test inputs at epoch 0 and after every epoch, writes
summary.json and figures to --out, and prints the verdicts.

  python experiments/finding2_information_amount.py --preset cpu   # LeNet/MNIST, 20 epochs, ~17 min on 2 CPU cores
  python experiments/finding2_information_amount.py --preset smoke # seconds; what the tests run
  python experiments/finding2_information_amount.py                # the paper's 200 epochs (use an accelerator)
"""

import sys

from jaxmi.findings import finding2
from jaxmi.findings.common import script_main


def _run(config, out, *, options, overwrite, show_progress):
    del options  # finding 2 has no options beyond the shared flags
    return finding2.run(config, out, overwrite=overwrite, show_progress=show_progress)


def main(argv=None) -> int:
    return script_main(argv, description=__doc__, default_out="runs/finding2_<dataset>_<model>", presets={},
                       run=_run, out_name="finding2", seeds_native=True)


if __name__ == "__main__":
    sys.exit(main())
