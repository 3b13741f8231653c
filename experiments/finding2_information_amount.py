#!/usr/bin/env python
"""Finding 2: AT is harder than NT, and AT layers carry less information about the input.

Trains a normally trained (NT) and a PGD adversarially trained (AT) network from the same
initial weights, measures I(X;T) and I(T;Y) of every probe layer (KDE upper/lower bounds and
binning) on clean and adversarial test inputs at epoch 0 and after every epoch, writes
summary.json and figures to --out, and prints the verdicts.

  python experiments/finding2_information_amount.py --preset cpu
  python experiments/finding2_information_amount.py --preset smoke # seconds; what the tests run
  python experiments/finding2_information_amount.py                # the paper's 200 epochs (use an accelerator)
"""

import sys

from jaxmi import cli
from jaxmi.findings import finding2


def main(argv=None) -> int:
    return cli.main(finding2.FINDING, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
