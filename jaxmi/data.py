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
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import gzip
import hashlib
import os
import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxmi import progress

__all__ = ["DataError", "DatasetInfo", "DATASETS", "SOURCES", "ArrayDataset", "dataset_info", "load_dataset",
           "to_float", "augment_crop_flip", "as_device_arrays", "read_idx", "BUNDLED_DIR", "eval_draw",
           "class_names"]

BUNDLED_DIR = Path(__file__).parent / "datasets" / "mnist"
SOURCES = ("auto", "bundled", "idx", "cifar_batches", "image_folder", "tfds")
SPLITS = ("train", "test")


class DataError(ValueError):
    """A dataset could not be loaded; the message names the file, the problem and the fix."""


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


# --------------------------------------------------------------------------------------
# IDX

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:  # gzip raises EOFError/BadGzipFile on truncated archives
        raise DataError(f"{path}: cannot read ({e}); the file is damaged or truncated — "
                        "download it again.") from e


def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Reads one IDX file (optionally gzip-compressed) into a NumPy array.

    Layout: two zero bytes, a type byte (0x08 = uint8), the number of dimensions, then one
    big-endian int32 per dimension and the raw values.

    Args:
      path: the file.
      ndim: the expected number of dimensions (3 for images, 1 for labels), checked if given.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise DataError(f"{path}: wrong IDX magic number {magic} (expected 2051 for images, 2049 for labels); "
                        "this is not an IDX file — check the file name or re-download it.")
    dims = raw[3]
    if ndim is not None and dims != ndim:
        raise DataError(f"{path}: IDX file has {dims} dimensions, expected {ndim} "
                        f"(magic {int.from_bytes(raw[:4], 'big')}); images and labels may be swapped.")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; re-download the file.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        kind = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(f"{path}: file is {kind} ({len(raw)} bytes, header {shape} needs {expected}); "
                        "re-download it.")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


_IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(directory: Path, stem: str) -> Path | None:
    for cand in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / cand).is_file():
            return directory / cand
    return None


def _load_idx(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    img_stem, lbl_stem = _IDX_NAMES[split]
    paths = []
    for stem in (img_stem, lbl_stem):
        p = _find(directory, stem)
        if p is None:
            raise DataError(f"{directory / (stem + '.gz')}: missing file (looked for {stem} and {stem}.gz); "
                            "put the four MNIST-format IDX files in --data-dir.")
        paths.append(p)
    images = read_idx(paths[0], ndim=3)
    labels = read_idx(paths[1], ndim=1)
    if images.dtype != np.uint8:
        raise DataError(f"{paths[0]}: IDX images must be uint8, found {images.dtype}.")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{paths[0]} holds {images.shape[0]} images but {paths[1]} holds {labels.shape[0]} "
                        "labels; the two files come from different downloads — re-download both.")
    return images[..., None], labels, str(directory)


# --------------------------------------------------------------------------------------
# CIFAR-10 python batches


def _load_cifar_batches(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    if (directory / "cifar-10-batches-py").is_dir():
        directory = directory / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels = [], []
    for name in names:
        path = directory / name
        if not path.is_file():
            raise DataError(f"{path}: missing file; --data-dir must hold the CIFAR-10 python batches "
                            "(data_batch_1 … data_batch_5, test_batch).")
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], np.uint8)
            lbl = np.asarray(batch[b"labels"], np.int64)
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: not a readable CIFAR-10 python batch ({type(e).__name__}: {e}); "
                            "re-download it.") from e
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: data has shape {data.shape}, expected [N, 3072]; re-download it.")
        if data.shape[0] != lbl.shape[0]:
            raise DataError(f"{path}: {data.shape[0]} images but {lbl.shape[0]} labels; re-download it.")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(lbl)
    return np.concatenate(images), np.concatenate(labels), str(directory)


# --------------------------------------------------------------------------------------
# Image folders

_IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".webp"}


def _cache_dir() -> Path:
    return Path(os.environ.get("JAXMI_CACHE", Path.home() / ".cache" / "jaxmi"))


def _decode(path: Path, mode: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert(mode), np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot decode image ({e}); delete or replace the file.") from e


def _load_image_folder(directory: Path, split: str, channels: int | None,
                       image_shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray, str]:
    root = directory / split
    if not root.is_dir():
        raise DataError(f"{root}: missing split folder; an image-folder dataset needs "
                        f"{directory}/{split}/<class>/<images>.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root}: no class folders; expected {root}/<class>/<images>.")
    files, labels = [], []
    for label, cls in enumerate(classes):
        found = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in _IMAGE_EXTS)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataError(f"{root}: the class folders {classes} hold no images ({sorted(_IMAGE_EXTS)}).")
    # A fixed shuffle (not class by class), so that prefixes (max_examples, smoke runs, the
    # first n training images) hold every class, as they do in MNIST, CIFAR batches and TFDS.
    order = np.random.default_rng(0).permutation(len(files))
    files = [files[i] for i in order]
    labels = np.asarray(labels, np.int32)[order]
    mode = {1: "L", 3: "RGB", None: "RGB"}[channels]

    # Cache keyed on the file list, sizes and modification times.
    h = hashlib.sha256(f"{root.resolve()}|{mode}|{classes}".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    cache = _cache_dir() / f"imagefolder-v2-{h.hexdigest()[:24]}.npy"
    if cache.is_file():
        try:
            images = np.load(cache)
            if images.shape[0] == len(files):
                return images, labels, str(root)
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt below

    out: list[np.ndarray | None] = [None] * len(files)
    with progress.bar(len(files), f"decoding {root}") as bar, \
            concurrent.futures.ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))) as pool:
        for i, arr in enumerate(pool.map(lambda p: _decode(p, mode), files, chunksize=256)):
            out[i] = arr
            bar.update(1)
    shapes = {a.shape for a in out}
    if len(shapes) != 1:
        odd = next(f for f, a in zip(files, out) if a.shape != out[0].shape)
        raise DataError(f"{odd}: image shape {dict(zip(files, out))[odd].shape} differs from "
                        f"{out[0].shape} ({files[0]}); all images of a dataset must have one size.")
    images = np.stack(out)
    if images.ndim == 3:
        images = images[..., None]
    if image_shape is not None and images.shape[1:] != tuple(image_shape):
        raise DataError(f"{root}: images are {images.shape[1:]}, expected {tuple(image_shape)}; "
                        "is --data-dir the right dataset?")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, images)
        os.replace(tmp, cache)
    except OSError:
        pass  # caching is an optimisation only
    return images, labels, str(root)


# --------------------------------------------------------------------------------------
# TFDS


def _load_tfds(name: str, split: str, data_dir: str | None,
               max_examples: int | None) -> tuple[np.ndarray, np.ndarray, int, str]:
    import tensorflow_datasets as tfds

    tfds_name = DATASETS[name].tfds_name if name in DATASETS else name
    try:
        source = tfds.data_source(tfds_name, split=split, data_dir=data_dir)
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        num_classes = int(builder.info.features["label"].num_classes)
    except Exception as e:  # noqa: BLE001 — TFDS raises many types (network, missing builder, …)
        why = (str(e).strip().splitlines() or [""])[0][:300]
        raise DataError(
            f"tfds:{tfds_name} split {split!r}: could not load through TensorFlow Datasets "
            f"({type(e).__name__}: {why}). Offline, pass --data-dir with a local copy (IDX files, CIFAR-10 "
            "python batches or <split>/<class>/ image folders), or prepare it once online with "
            f"tfds.data_source({tfds_name!r}, data_dir=...).") from e
    n = len(source) if max_examples is None else min(len(source), max_examples)
    if n == 0:
        raise DataError(f"tfds:{tfds_name} split {split!r} is empty.")
    first = source[0]
    images = np.empty((n, *np.shape(first["image"])), np.uint8)
    labels = np.empty((n,), np.int64)
    chunk = 1024
    with progress.bar(n, f"reading tfds:{tfds_name}/{split}") as bar:
        for start in range(0, n, chunk):
            keys = list(range(start, min(n, start + chunk)))
            try:
                items = source.__getitems__(keys)
            except TypeError:  # some sources (and TFDS's mock) lack batched reads
                items = [source[k] for k in keys]
            for k, ex in zip(keys, items):
                images[k] = ex["image"]
                labels[k] = ex["label"]
            bar.update(len(keys))
    return images, labels, num_classes, f"tfds:{tfds_name}/{split}"


# --------------------------------------------------------------------------------------


def _detect(directory: Path, split: str) -> str:
    if _find(directory, _IDX_NAMES.get(split, _IDX_NAMES["train"])[0]) is not None:
        return "idx"
    if (directory / "cifar-10-batches-py").is_dir() or (directory / "test_batch").is_file():
        return "cifar_batches"
    if (directory / split).is_dir():
        return "image_folder"
    return "tfds"


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
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}; choose one of {list(SOURCES)}.")
    if name.startswith("tfds:"):  # any TFDS dataset by name: "tfds:emnist/digits"
        name, source = name[len("tfds:"):], "tfds"
    if name not in DATASETS and source != "tfds" and data_dir is None:
        dataset_info(name)  # raises, listing the known names
    if max_examples is not None and (int(max_examples) != max_examples or max_examples < 1):
        raise DataError(f"max_examples must be a positive integer or None; got {max_examples}.")
    info = DATASETS.get(name)
    if data_dir is not None and not Path(data_dir).exists() and source != "tfds":
        raise DataError(f"{data_dir}: --data-dir does not exist; give the directory that holds the dataset.")

    if source == "auto":
        if data_dir is None:
            source = "bundled" if name == "mnist" else "tfds"
        else:
            source = _detect(Path(data_dir), split)
    if source != "tfds" and split not in SPLITS:
        raise DataError(f"unknown split {split!r} for a local {source} dataset; use 'train' or 'test'.")

    num_classes = info.num_classes if info is not None else None
    if source == "bundled":
        if name != "mnist":
            raise DataError(f"only MNIST is bundled, not {name!r}; use source='tfds' or --data-dir.")
        images, labels, where = _load_idx(BUNDLED_DIR, split)
        where = f"bundled:{where}"
    elif source == "idx":
        images, labels, where = _load_idx(Path(data_dir or "."), split)
    elif source == "cifar_batches":
        images, labels, where = _load_cifar_batches(Path(data_dir or "."), split)
    elif source == "image_folder":
        images, labels, where = _load_image_folder(Path(data_dir or "."), split,
                                                   info.image_shape[-1] if info else None,
                                                   info.image_shape if info else None)
        if num_classes is None:
            num_classes = int(labels.max()) + 1
    else:
        images, labels, num_classes, where = _load_tfds(name, split, None if data_dir is None else str(data_dir),
                                                        max_examples)

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
