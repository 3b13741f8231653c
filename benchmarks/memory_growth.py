#!/usr/bin/env python
"""Host memory across epochs: runs train_and_measure and prints the process RSS after every epoch.

A leak shows as RSS that keeps rising after the first epochs (which compile and allocate
caches). Prints one line per measurement and, at the end, the growth from NT epoch 2 to
the last NT epoch and from AT epoch 2 to the last AT epoch, per epoch.

  python benchmarks/memory_growth.py --epochs 30                       # LeNet, 2,048 MNIST images
  python benchmarks/memory_growth.py --epochs 20 --train-examples 60000 --samples 1000
"""

import argparse
import re
import sys

from jaxmi.config import make_config
from jaxmi.results import write_json
from jaxmi.run import train_and_measure


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1)) / 1024


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--model", default="lenet")
    p.add_argument("--train-examples", type=int, default=2048)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--eval-samples", type=int, default=512)
    p.add_argument("--json", help="also write the RSS series here")
    a = p.parse_args(argv)
    config = make_config("cpu", epochs=a.epochs, model=a.model, train_examples=a.train_examples,
                         samples=a.samples, eval_samples=a.eval_samples)
    series = {"nt": [], "at": []}

    def log(msg):
        m = re.match(r"\[(NT|AT)\] epoch (\d+)", msg)
        if m:
            rss = rss_mib()
            series[m.group(1).lower()].append(rss)
            print(f"{m.group(1)} epoch {int(m.group(2)):3d}  RSS {rss:8.1f} MiB", flush=True)

    train_and_measure(config, log=log, show_progress=False)
    for mode, s in series.items():
        if len(s) > 3:
            print(f"{mode.upper()}: RSS {s[2]:.1f} MiB after epoch 2 -> {s[-1]:.1f} MiB after epoch {len(s) - 1} "
                  f"({(s[-1] - s[2]) / (len(s) - 3):+.2f} MiB/epoch)")
    if a.json:
        write_json(a.json, {"config": config.flat(), "rss_mib": series})
    return 0


if __name__ == "__main__":
    sys.exit(main())
