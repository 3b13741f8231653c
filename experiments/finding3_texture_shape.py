#!/usr/bin/env python
"""Finding 3: NT-CNNs rely on texture, AT-CNNs on shape (saturation vs patch shuffling).

Trains NT and PGD-AT copies of a model from the same initial weights (or loads them from a
finished finding-1/finding-2 run directory with --from-run DIR), then on one fixed draw of test
images measures accuracy, loss and the KDE-lower-bound I(X;T) and I(T;Y) of every probe under
saturation (p = 2, 8, 16, 64, 1024) and patch shuffling (k = 0, 2, 4, 8), on clean inputs and on
adversarial inputs (PGD on the undistorted image, then distorted). Also: the true → predicted
class matrix on adversarial inputs with mean confidence, and saliency / SmoothGrad / Integrated
Gradients maps of the same images under NT and AT.

Default: LeNet on CIFAR-10 (PGD ε 8/255, step 2/255, 7 steps). Offline, point --data-dir at an
image-folder copy, e.g. ../shared/data/cifar10-jpeg (a JPEG-recompressed copy of CIFAR-10: results
are close to, not identical with, the original); online, CIFAR-10 comes from TFDS.

  python experiments/finding3_texture_shape.py --preset cpu --data-dir ../shared/data/cifar10-jpeg
  python experiments/finding3_texture_shape.py --from-run runs/finding1_cifar10_lenet --data-dir ../shared/data/cifar10-jpeg
      # reuse the models trained by finding 1 (minutes)
  python experiments/finding3_texture_shape.py --model wrn --data-dir ../shared/data/cifar10-jpeg   # accelerator
  python experiments/finding3_texture_shape.py --model wrn --dataset stl10                           # accelerator, TFDS
  python experiments/finding3_texture_shape.py --preset smoke --dataset mnist   # seconds; what the tests run

On 28-px MNIST the shuffle grid 8 does not divide the image, so the default levels become
0, 2, 4, 7; an explicit --shuffle that does not divide the image is an error.
Output in --out (default runs/finding3_<dataset>_<model>): summary.json ("results" with
"distortion", "adversarial_confusion", "attribution_edge_alignment"; "verdicts", "evidence"), figures
distortion_accuracy.png, distortion_mi_saturation.png, distortion_mi_shuffle.png,
adversarial_confusion.png, attribution_maps.png, distortion_examples.png; timing.json.
"""

import sys

from jaxmi import cli
from jaxmi.findings import finding3


def main(argv=None) -> int:
    return cli.main(finding3.FINDING, argv, description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
