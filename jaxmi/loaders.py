"""Readers of datasets on disk, behind :func:`jaxmi.data.load_dataset`.

IDX files (:func:`read_idx`, :func:`load_idx`), the CIFAR-10 python batches
(:func:`load_cifar_batches`), ``<split>/<class>/<image>`` folders decoded once with Pillow
and cached as ``.npy`` under ``$JAXMI_CACHE`` (:func:`load_image_folder`), and TensorFlow
Datasets (:func:`load_tfds`); :func:`detect_source` tells the layout of a directory. Each
reader returns ``(images uint8 [N, H, W, C], labels, where)`` (TFDS also the number of
classes), checks what it reads and raises :class:`DataError` naming the file, the problem and
the fix. The dataset API (names, checks, :class:`jaxmi.data.ArrayDataset`) is
:mod:`jaxmi.data`, which re-exports :class:`DataError` and :func:`read_idx`.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np

from jaxmi import progress

__all__ = ["DataError", "read_idx", "load_idx", "load_cifar_batches", "load_image_folder", "load_tfds",
           "detect_source"]


class DataError(ValueError):
    """A dataset could not be loaded; the message names the file, the problem and the fix."""


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



def load_idx(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The four MNIST-format IDX files of a directory, one split: ``(images [N, H, W, 1], labels, where)``."""
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


def load_cifar_batches(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The CIFAR-10 python batches of ``directory`` (or its ``cifar-10-batches-py``), one split."""
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



def load_image_folder(directory: Path, split: str, channels: int | None,
                      image_shape: tuple[int, ...] | None) -> tuple[np.ndarray, np.ndarray, str]:
    """``directory/split/<class>/<image>``, decoded (and cached) in a fixed shuffled order."""
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


def load_tfds(tfds_name: str, split: str, data_dir: str | None,
              max_examples: int | None) -> tuple[np.ndarray, np.ndarray, int, str]:
    """A TFDS dataset by its TFDS name, through :func:`tfds.data_source`: ``(images, labels, classes, where)``."""
    import tensorflow_datasets as tfds

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
# The layout of a directory


def detect_source(directory: Path, split: str) -> str:
    """The layout of ``directory`` (``"idx"``, ``"cifar_batches"``, ``"image_folder"``), else ``"tfds"``."""
    if _find(directory, _IDX_NAMES.get(split, _IDX_NAMES["train"])[0]) is not None:
        return "idx"
    if (directory / "cifar-10-batches-py").is_dir() or (directory / "test_batch").is_file():
        return "cifar_batches"
    if (directory / split).is_dir():
        return "image_folder"
    return "tfds"
