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

import argparse
import os
import sys

from jaxmi.experiment import add_common_flags, config_from_args
from jaxmi.findings import finding2


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_flags(parser, default_out="runs/finding2")
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    out = args.out or f"runs/finding2_{config.dataset}_{config.model}"
    try:
        summary = finding2.run(config, out, overwrite=args.overwrite, show_progress=not args.no_progress)
    except (ValueError, OSError, FloatingPointError) as e:  # user-facing problems: no traceback
        if os.environ.get("JAXMI_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nwrote {out}/summary.json and {len(summary['figures'])} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
