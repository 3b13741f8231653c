"""Image distortions that separate texture from shape (Zhang et al. 2022, arXiv:2207.05756, §texture vs shape).

* **Saturation** (removes texture, keeps shape), level p > 0, per pixel and channel::

      v ↦ clip(0.5 + 0.5 · sign(2v − 1) · |2v − 1|^(2/p), 0, 1)

  p = 2 is the identity; as p grows every value is pushed towards 0 or 1 and the image
  approaches a binary one (edges and silhouettes survive, fine texture does not).
* **Patch shuffling** (destroys shape, keeps local texture), level k: the image is cut into a
  k × k grid of tiles, the tiles are permuted at random and reassembled; k = 0 (and k = 1)
  leave the image unchanged. k must divide the image height and width.

Both are pure functions of arrays (and, for shuffling, of an explicit PRNG key: unlike the
published code, nothing is mutated in place and nothing is unseeded), jit- and vmap-friendly.
Images are float arrays in [0, 1], ``[H, W, C]`` or a batch ``[B, H, W, C]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["saturate", "patch_shuffle", "distort", "check_shuffle_level", "check_saturation_level", "levels",
           "default_shuffle_levels", "SATURATION_LEVELS", "SHUFFLE_LEVELS", "KINDS", "is_identity"]

Array = jax.Array

#: The paper's saturation levels (p = 2 is the undistorted image).
SATURATION_LEVELS: tuple[float, ...] = (2, 8, 16, 64, 1024)
#: The paper's patch-shuffle grid sizes (k = 0 is the undistorted image).
SHUFFLE_LEVELS: tuple[int, ...] = (0, 2, 4, 8)
KINDS = ("saturation", "shuffle")


def check_saturation_level(p) -> None:
    """Raises ValueError unless p is a finite number > 0 (skipped for traced values)."""
    if isinstance(p, jax.core.Tracer):
        return
    arr = np.asarray(p)
    if not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ValueError(f"saturation level p must be a finite number > 0 (p = 2 is the identity, the paper "
                         f"uses 2, 8, 16, 64, 1024); got {p}.")


def saturate(images: Array, p) -> Array:
    """Saturation of level ``p``: ``clip(0.5 + 0.5·sign(2v−1)·|2v−1|^(2/p), 0, 1)``.

    Args:
      images: float images in [0, 1], any shape (applied per pixel and channel).
      p: the level, > 0 (a Python number, or a traced scalar inside ``jit``/``vmap``).

    Returns:
      The saturated images, same shape and dtype.
    """
    check_saturation_level(p)
    x = jnp.asarray(images)
    u = 2.0 * x - 1.0
    out = 0.5 + 0.5 * jnp.sign(u) * jnp.power(jnp.abs(u), 2.0 / jnp.asarray(p, x.dtype))
    return jnp.clip(out, 0.0, 1.0).astype(x.dtype)


def check_shuffle_level(k: int, height: int, width: int) -> None:
    """Raises ValueError unless k is a non-negative integer dividing the image height and width."""
    if int(k) != k or k < 0:
        raise ValueError(f"patch-shuffle level k must be a non-negative integer (a k × k grid; 0 = unchanged); "
                         f"got {k}.")
    k = int(k)
    if k > 1 and (height % k or width % k):
        divisors = [d for d in range(2, min(height, width) + 1) if height % d == 0 and width % d == 0]
        raise ValueError(f"patch-shuffle level k={k} does not divide the {height}×{width} image into equal tiles; "
                         f"choose k from {divisors} (or 0 for no shuffling).")


def _shuffle_one(key: Array, img: Array, k: int) -> Array:
    h, w, c = img.shape
    th, tw = h // k, w // k
    tiles = img.reshape(k, th, k, tw, c).transpose(0, 2, 1, 3, 4).reshape(k * k, th, tw, c)
    tiles = tiles[jax.random.permutation(key, k * k)]
    return tiles.reshape(k, k, th, tw, c).transpose(0, 2, 1, 3, 4).reshape(h, w, c)


def patch_shuffle(key: Array, images: Array, k: int) -> Array:
    """Cuts each image into a k × k grid of tiles and permutes the tiles at random.

    Tile t (row-major: row ``t // k``, column ``t % k``) of the output is tile ``perm[t]`` of
    the input, with ``perm = jax.random.permutation(key_b, k*k)`` and ``key_b`` the b-th of
    ``jax.random.split(key, B)`` for a batch (the key itself for one image).

    Args:
      key: a PRNG key.
      images: ``[H, W, C]`` or ``[B, H, W, C]``.
      k: grid size (static); 0 or 1 returns the images unchanged.

    Returns:
      The shuffled images, same shape.

    Raises:
      ValueError: k negative, not an integer, or not dividing H and W.
    """
    x = jnp.asarray(images)
    if x.ndim not in (3, 4):
        raise ValueError(f"patch_shuffle expects [H, W, C] or [B, H, W, C] images; got shape {x.shape}.")
    h, w = x.shape[-3], x.shape[-2]
    check_shuffle_level(k, h, w)
    k = int(k)
    if k <= 1:
        return x
    if x.ndim == 3:
        return _shuffle_one(key, x, k)
    keys = jax.random.split(key, x.shape[0])
    return jax.vmap(lambda kk, im: _shuffle_one(kk, im, k))(keys, x)


def is_identity(kind: str, level) -> bool:
    """Whether a distortion level leaves images unchanged (saturation p = 2, shuffle k ≤ 1)."""
    return (kind == "saturation" and float(level) == 2.0) or (kind == "shuffle" and int(level) <= 1)


def distort(images: Array, kind: str, level, key: Array | None = None) -> Array:
    """Applies one distortion: ``kind`` "saturation" (level p) or "shuffle" (level k, needs ``key``)."""
    if kind == "saturation":
        return saturate(images, level)
    if kind == "shuffle":
        if key is None and int(level) > 1:
            raise ValueError("patch shuffling needs a PRNG key: distort(x, 'shuffle', k, key=jax.random.key(0)).")
        return patch_shuffle(key, images, level) if int(level) > 1 else jnp.asarray(images)
    raise ValueError(f"unknown distortion {kind!r}; choose one of {list(KINDS)}.")


def default_shuffle_levels(height: int, width: int, levels: Sequence[int] = SHUFFLE_LEVELS) -> tuple[int, ...]:
    """The paper's shuffle levels where they divide the image; otherwise the nearest dividing grid sizes.

    32 px (CIFAR-10) and 96 px (STL-10) keep (0, 2, 4, 8); 28 px (MNIST) gets (0, 2, 4, 7).
    """
    divisors = [d for d in range(2, min(height, width) + 1) if height % d == 0 and width % d == 0]
    out = []
    for k in levels:
        if k <= 1 or (height % k == 0 and width % k == 0):
            out.append(int(k))
        elif divisors:
            out.append(min(divisors, key=lambda d: (abs(d - k), d)))
    return tuple(dict.fromkeys(out))


def levels(kind: str, image_shape: Sequence[int], *, saturation: Sequence[float] = SATURATION_LEVELS,
           shuffle: Sequence[int] | None = None) -> list:
    """The levels of one distortion for images of ``image_shape`` (H, W, C), validated.

    Saturation: ``saturation`` as floats. Shuffle: ``shuffle``, or by default
    :func:`default_shuffle_levels`; every k must divide the image (:func:`check_shuffle_level`).
    """
    if kind == "saturation":
        return [float(p) for p in saturation]
    if kind != "shuffle":
        raise ValueError(f"unknown distortion {kind!r}; choose one of {list(KINDS)}.")
    h, w = int(image_shape[0]), int(image_shape[1])
    ks = shuffle if shuffle is not None else default_shuffle_levels(h, w)
    for k in ks:
        check_shuffle_level(k, h, w)
    return [int(k) for k in ks]
