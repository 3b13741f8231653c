"""Datasets as uint8 arrays on the host, float32 in [0, 1] on the device, and on-device augmentation.

Sources (``load_dataset(..., source=...)``):

* ``"bundled"`` — real MNIST inside the package, the offline default for ``mnist``.
* ``"idx"`` — a directory of IDX files (MNIST, Fashion-MNIST), ``train-images-idx3-ubyte`` …
  ``t10k-labels-idx1-ubyte``, each optionally ``.gz``.
* ``"cifar_batches"`` — the CIFAR-10 "python version" (``data_batch_1`` … ``data_batch_5``,
  ``test_batch``), in ``data_dir`` or in ``data_dir/cifar-10-batches-py``.
* ``"image_folder"`` — ``data_dir/<split>/<class>/<image>`` trees (class label = index of the
  class folder in sorted order), e.g. a JPEG copy of CIFAR-10. Decoded once with Pillow and cached
  as ``.npy`` under ``$JAXMI_CACHE`` (default ``~/.cache/jaxmi``).
* ``"tfds"`` — TensorFlow Datasets through :func:`tfds.data_source` (random access, no
  TensorFlow needed); ``data_dir`` is passed on as the TFDS data directory. Any TFDS image
  classification dataset works by name.
* ``"auto"`` (default) — bundled MNIST when no ``data_dir`` is given for ``mnist``; otherwise
  the layout found in ``data_dir`` (IDX files, CIFAR batches, split folders), else TFDS.

Image folders come in a fixed shuffled order (NumPy seed 0), so the first n examples of a
split hold every class. All loaders check what they read (IDX magic numbers, truncation, image/label counts, label
range, image shapes) and raise :class:`DataError` naming the file, the problem and the fix.
The readers themselves are in :mod:`jaxmi.loaders`.
"""

from __future__ import annotations

import dataclasses
import operator
import os
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import loaders
from jaxmi.loaders import DataError, read_idx  # part of this module's API

__all__ = ["DataError", "DatasetInfo", "DATASETS", "SOURCES", "ArrayDataset", "dataset_info", "load_dataset",
           "to_float", "augment_crop_flip", "as_device_arrays", "read_idx", "BUNDLED_DIR", "eval_draw",
           "class_names"]

BUNDLED_DIR = Path(__file__).parent / "datasets" / "mnist"
SOURCES = ("auto", "bundled", "idx", "cifar_batches", "image_folder", "tfds")
SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What jaxmi knows about a dataset before loading it."""

    name: str
    image_shape: tuple[int, int, int]  # H, W, C
    num_classes: int
    augment: bool  # the paper trains with 4-px random crops and horizontal flips
    tfds_name: str


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10, False, "mnist"),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10, False, "fashion_mnist"),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10, True, "cifar10"),
    "stl10": DatasetInfo("stl10", (96, 96, 3), 10, True, "stl10"),
}


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a known dataset; raises :class:`DataError` for unknown names."""
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets are {sorted(DATASETS)}; other TFDS "
                        f"image datasets load as 'tfds:<name>', local copies with a data directory.")
    return DATASETS[name]


@dataclasses.dataclass(frozen=True)
class ArrayDataset:
    """One split held in host memory.

    Attributes:
      images: uint8 [N, H, W, C].
      labels: int32 [N], in ``[0, num_classes)``.
      num_classes: number of classes.
      name, split: what was loaded.
      source: where it came from (a path or ``"tfds:<name>"``), for the run's summary.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    split: str
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_dataset(name: str, split: str = "train", *, data_dir: str | os.PathLike | None = None,
                 source: str = "auto", max_examples: int | None = None) -> ArrayDataset:
    """Loads one split of a dataset into host memory as uint8 images and int32 labels.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"stl10"`` (see :data:`DATASETS`);
        any TFDS image-classification dataset as ``"tfds:<name>"`` (or with ``source="tfds"``);
        any name with a local ``data_dir`` (shape and classes then come from the files).
      split: ``"train"`` or ``"test"`` (TFDS also takes its split syntax, e.g. ``"train[:10%]"``).
      data_dir: a local copy (see the module docstring for layouts) or a TFDS data directory.
      source: one of :data:`SOURCES`; ``"auto"`` picks bundled MNIST or the layout in ``data_dir``.
      max_examples: keep only the first n examples (smoke runs).

    Returns:
      An :class:`ArrayDataset`.

    Raises:
      DataError: unknown name/source/split, missing or damaged files, count mismatches, labels
        outside ``[0, num_classes)``, images of the wrong shape.
    """
    if not isinstance(name, str):
        raise DataError(f"name must be a dataset name, a string such as 'mnist' or 'tfds:<name>'; got {name!r} "
                        f"({type(name).__name__}).")
    if not isinstance(split, str):
        raise DataError(f"split must be a string, 'train' or 'test'; got {split!r} ({type(split).__name__}).")
    if not isinstance(source, str) or source not in SOURCES:
        raise DataError(f"unknown source {source!r}; choose one of {list(SOURCES)}.")
    if name.startswith("tfds:"):  # any TFDS dataset by name: "tfds:emnist/digits"
        name, source = name[len("tfds:"):], "tfds"
    if name not in DATASETS and source != "tfds" and data_dir is None:
        dataset_info(name)  # raises, listing the known names
    if max_examples is not None:
        try:
            ok = not isinstance(max_examples, bool) and operator.index(max_examples) >= 1
        except TypeError:
            ok = False
        if not ok:
            raise DataError(f"max_examples must be a positive integer or None (all examples); got {max_examples!r}.")
    info = DATASETS.get(name)
    if data_dir is not None and not Path(data_dir).exists() and source != "tfds":
        raise DataError(f"{data_dir}: --data-dir does not exist (data_dir={str(data_dir)!r}); give the directory "
                        "that holds the dataset.")

    if source == "auto":
        if data_dir is None:
            source = "bundled" if name == "mnist" else "tfds"
        else:
            source = loaders.detect_source(Path(data_dir), split)
    if source != "tfds" and split not in SPLITS:
        raise DataError(f"unknown split {split!r} for a local {source} dataset; use 'train' or 'test'.")

    num_classes = info.num_classes if info is not None else None
    if source == "bundled":
        if name != "mnist":
            raise DataError(f"only MNIST is bundled, not {name!r}; use source='tfds' or --data-dir.")
        images, labels, where = loaders.load_idx(BUNDLED_DIR, split)
        where = f"bundled:{where}"
    elif source == "idx":
        images, labels, where = loaders.load_idx(Path(data_dir or "."), split)
    elif source == "cifar_batches":
        images, labels, where = loaders.load_cifar_batches(Path(data_dir or "."), split)
    elif source == "image_folder":
        images, labels, where = loaders.load_image_folder(Path(data_dir or "."), split,
                                                          info.image_shape[-1] if info else None,
                                                          info.image_shape if info else None)
        if num_classes is None:
            num_classes = int(labels.max()) + 1
    else:
        tfds_name = info.tfds_name if info is not None else name
        tfds_dir = None if data_dir is None else str(data_dir)
        images, labels, num_classes, where = loaders.load_tfds(tfds_name, split, tfds_dir, max_examples)

    if max_examples is not None:
        images, labels = images[:max_examples], labels[:max_examples]
    if len(labels) == 0:
        raise DataError(f"{where}: split {split!r} holds no examples.")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where}: label {int(labels[i])} at index {i} is outside [0, {num_classes}) for "
                        f"{name}; the labels file is damaged or belongs to another dataset.")
    if info is not None and images.shape[1:] != info.image_shape:
        raise DataError(f"{where}: images are {images.shape[1:]}, expected {info.image_shape} for {name}; "
                        "is --data-dir the right dataset?")
    return ArrayDataset(images=np.ascontiguousarray(images, np.uint8), labels=labels.astype(np.int32),
                        num_classes=int(num_classes), name=name, split=split, source=where)


# --------------------------------------------------------------------------------------
# On the device


def to_float(images: jax.Array) -> jax.Array:
    """uint8 images → float32 in [0, 1]."""
    return images.astype(jnp.float32) / 255.0


def augment_crop_flip(key: jax.Array, images: jax.Array, *, pad: int = 4, flip: bool = True) -> jax.Array:
    """Random crop after zero-padding by ``pad`` pixels, and random horizontal flip, per image.

    The CIFAR/STL augmentation of the paper (torchvision ``RandomCrop(size, padding=4)`` +
    ``RandomHorizontalFlip()``), vmapped over the batch with one key per image.

    Args:
      key: a typed PRNG key.
      images: [B, H, W, C] float images.
      pad: padding on every side; the crop offset is uniform in ``[0, 2·pad]``.
      flip: flip left-right with probability ½.
    """
    if images.ndim != 4:
        raise ValueError(f"augment_crop_flip expects [B, H, W, C] images; got shape {images.shape}.")
    b, h, w, c = images.shape
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    k_off, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_off, (b, 2), 0, 2 * pad + 1)
    do_flip = jax.random.bernoulli(k_flip, 0.5, (b,)) if flip else jnp.zeros((b,), bool)

    def one(img, off, fl):
        crop = jax.lax.dynamic_slice(img, (off[0], off[1], 0), (h, w, c))
        return jnp.where(fl, crop[:, ::-1], crop)

    return jax.vmap(one)(padded, offsets, do_flip)


def as_device_arrays(ds: ArrayDataset, sharding: jax.sharding.Sharding | None = None
                     ) -> tuple[jax.Array, jax.Array]:
    """The dataset's uint8 images and int32 labels as device arrays (resident for the whole run)."""
    if sharding is None:
        return jnp.asarray(ds.images), jnp.asarray(ds.labels)
    return jax.device_put(ds.images, sharding), jax.device_put(ds.labels, sharding)


def eval_draw(key: jax.Array, num_test: int, samples: int, eval_samples: int | None = None):
    """The fixed draw of test images a run measures on: one keyed permutation of the test split.

    Returns:
      ``(mi_idx, rest_idx)``: the first ``samples`` indices (the MI draw, the same for every
      measurement, clean and adversarial, NT and AT) and the rest of the first
      ``eval_samples`` (accuracy and loss are on both; ``None``: the whole split).
    """
    if samples > num_test:
        raise ValueError(f"samples={samples} exceeds the {num_test} test images; lower --samples.")
    perm = np.asarray(jax.random.permutation(key, int(num_test)))
    n_eval = int(num_test) if eval_samples is None else min(int(eval_samples), int(num_test))
    return perm[:samples], perm[samples:n_eval]


def class_names(name: str) -> Sequence[str] | None:
    """Human-readable class names for the known datasets (for figures)."""
    return {
        "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        "stl10": ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"),
        "fashion_mnist": ("T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                          "bag", "boot"),
    }.get(name, tuple(str(i) for i in range(10)) if name == "mnist" else None)
