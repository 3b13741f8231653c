import gzip
import pickle
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmi import data
from jaxmi.data import DataError


def _idx_bytes(arr: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + b"".join(struct.pack(">i", d) for d in arr.shape) + \
        arr.astype(np.uint8).tobytes()


def _write_idx_dir(tmp_path, n_train=7, n_test=5, compress=True, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n, dtype=np.uint8)
        arrays[split] = (x, y)
        for kind, arr, dims in (("images", x, 3), ("labels", y, 1)):
            name = f"{split}-{kind}-idx{dims}-ubyte" + (".gz" if compress else "")
            raw = _idx_bytes(arr)
            (tmp_path / name).write_bytes(gzip.compress(raw) if compress else raw)
    return arrays


# ----- bundled MNIST: the real data ---------------------------------------------------


def test_bundled_mnist_is_the_real_dataset():
    tr = data.load_dataset("mnist", "train")
    te = data.load_dataset("mnist", "test")
    assert tr.images.shape == (60000, 28, 28, 1) and tr.images.dtype == np.uint8
    assert te.images.shape == (10000, 28, 28, 1)
    assert tr.labels.dtype == np.int32 and tr.num_classes == 10
    # Facts of the original distribution (see ../shared/data/README.md).
    np.testing.assert_array_equal(tr.labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(np.bincount(tr.labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert te.source.startswith("bundled:")
    assert len(data.load_dataset("mnist", "test", max_examples=123)) == 123


# ----- IDX directories ------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_directory_round_trip(tmp_path, compress):
    arrays = _write_idx_dir(tmp_path, compress=compress)
    for split, key in (("train", "train"), ("test", "t10k")):
        ds = data.load_dataset("fashion_mnist", split, data_dir=tmp_path)  # auto-detects IDX
        np.testing.assert_array_equal(ds.images[..., 0], arrays[key][0])
        np.testing.assert_array_equal(ds.labels, arrays[key][1])
        assert ds.source == str(tmp_path)


def test_idx_wrong_magic_names_the_file(tmp_path):
    _write_idx_dir(tmp_path)
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x12\x34\x56\x78" + bytes(20)))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: wrong IDX magic number 305419896"):
        data.load_dataset("mnist", "train", data_dir=tmp_path)


def test_idx_truncated_file(tmp_path):
    _write_idx_dir(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: file is truncated .*re-download"):
        data.load_dataset("mnist", "train", data_dir=tmp_path)


def test_idx_truncated_gzip(tmp_path):
    _write_idx_dir(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: cannot read .*truncated"):
        data.load_dataset("mnist", "test", data_dir=tmp_path)


def test_idx_count_mismatch(tmp_path):
    _write_idx_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(np.zeros(6, np.uint8))))
    with pytest.raises(DataError, match=r"holds 7 images but .*train-labels-idx1-ubyte\.gz holds 6 labels"):
        data.load_dataset("mnist", "train", data_dir=tmp_path)


def test_idx_swapped_files(tmp_path):
    _write_idx_dir(tmp_path)
    img = (tmp_path / "train-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(img)
    with pytest.raises(DataError, match="3 dimensions, expected 1"):
        data.load_dataset("mnist", "train", data_dir=tmp_path)


def test_idx_label_out_of_range(tmp_path):
    _write_idx_dir(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.array([1, 2, 3, 12, 0, 0, 0], np.uint8))))
    with pytest.raises(DataError, match=r"label 12 at index 3 is outside \[0, 10\)"):
        data.load_dataset("mnist", "train", data_dir=tmp_path)


def test_missing_file_and_directory(tmp_path):
    _write_idx_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: missing file"):
        data.load_dataset("mnist", "test", data_dir=tmp_path, source="idx")
    with pytest.raises(DataError, match="does not exist"):
        data.load_dataset("mnist", "test", data_dir=tmp_path / "nope")


def test_unknown_names():
    with pytest.raises(DataError, match=r"unknown dataset 'mnsit'.*known datasets are \['cifar10'"):
        data.load_dataset("mnsit")
    with pytest.raises(DataError, match="unknown source"):
        data.load_dataset("mnist", source="ftp")
    with pytest.raises(DataError, match="unknown split"):
        data.load_dataset("mnist", "validation")
    with pytest.raises(DataError, match="only MNIST is bundled"):
        data.load_dataset("cifar10", source="bundled")
    with pytest.raises(DataError, match="max_examples"):
        data.load_dataset("mnist", max_examples=0)
    assert issubclass(DataError, ValueError)


# ----- CIFAR-10 python batches ------------------------------------------------------------


def _write_cifar(tmp_path, n=4, seed=0):
    rng = np.random.default_rng(seed)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    truth = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, 10, n).tolist()
        truth[name] = (x, y)
        with open(d / name, "wb") as f:
            pickle.dump({b"data": x.reshape(n, -1), b"labels": y}, f)
    return truth


def test_cifar_batches_layout_and_channel_order(tmp_path):
    truth = _write_cifar(tmp_path)
    train = data.load_dataset("cifar10", "train", data_dir=tmp_path)
    test = data.load_dataset("cifar10", "test", data_dir=tmp_path)
    assert train.images.shape == (20, 32, 32, 3) and test.images.shape == (4, 32, 32, 3)
    x, y = truth["data_batch_2"]
    # CHW rows → HWC: pixel (r, c) channel k is x[k, r, c].
    np.testing.assert_array_equal(train.images[4:8], x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(train.labels[4:8], y)
    np.testing.assert_array_equal(test.labels, truth["test_batch"][1])


def test_cifar_batch_damaged(tmp_path):
    _write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="test_batch: not a readable CIFAR-10 python batch"):
        data.load_dataset("cifar10", "test", data_dir=tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3: missing file"):
        data.load_dataset("cifar10", "train", data_dir=tmp_path)


# ----- image folders ----------------------------------------------------------------------


def _write_folder(root, split, classes, per_class, size=(32, 32), fmt="png", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    arrays = []
    for c in classes:
        (root / split / c).mkdir(parents=True)
        for i in range(per_class):
            a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(a).save(root / split / c / f"{i:04d}.{fmt}")
            arrays.append(a)
    return np.stack(arrays)


def test_image_folder_lossless_round_trip_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMI_CACHE", str(tmp_path / "cache"))
    classes = ["b_cat", "a_dog", "c_eel"]  # labels follow sorted folder order
    want = _write_folder(tmp_path / "ds", "test", classes, 2)
    ds = data.load_dataset("cifar10", "test", data_dir=tmp_path / "ds")
    # Every image comes back once, with the label of its folder in sorted order.
    folder_label = {c: i for i, c in enumerate(sorted(classes))}
    expected = {want[2 * k + i].tobytes(): folder_label[c] for k, c in enumerate(classes) for i in range(2)}
    got = {img.tobytes(): int(lbl) for img, lbl in zip(ds.images, ds.labels)}
    assert got == expected
    assert sorted(ds.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
    again = data.load_dataset("cifar10", "test", data_dir=tmp_path / "ds")  # from the cache
    np.testing.assert_array_equal(again.images, ds.images)


def test_image_folder_prefix_holds_every_class(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMI_CACHE", str(tmp_path / "cache"))
    _write_folder(tmp_path / "ds", "train", [f"c{i}" for i in range(4)], 10, size=(8, 8))
    ds = data.load_dataset("toy", "train", data_dir=tmp_path / "ds", max_examples=12)
    assert set(ds.labels.tolist()) == {0, 1, 2, 3}  # not 10 × class 0 then 2 × class 1
    assert ds.num_classes == 4 and ds.images.shape == (12, 8, 8, 3)


def test_image_folder_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXMI_CACHE", str(tmp_path / "cache"))
    (tmp_path / "empty" / "train" / "cls").mkdir(parents=True)
    with pytest.raises(DataError, match="hold no images"):
        data.load_dataset("cifar10", "train", data_dir=tmp_path / "empty", source="image_folder")
    (tmp_path / "noclass" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class folders"):
        data.load_dataset("cifar10", "train", data_dir=tmp_path / "noclass", source="image_folder")
    _write_folder(tmp_path / "small", "train", ["a"], 1, size=(16, 16))
    with pytest.raises(DataError, match=r"images are \(16, 16, 3\), expected \(32, 32, 3\)"):
        data.load_dataset("cifar10", "train", data_dir=tmp_path / "small")
    _write_folder(tmp_path / "broken", "train", ["a"], 1)
    (tmp_path / "broken" / "train" / "a" / "zz.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"zz\.jpg: cannot decode image"):
        data.load_dataset("cifar10", "train", data_dir=tmp_path / "broken")


# ----- TFDS (offline, mocked) ----------------------------------------------------------------


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3)),
                                        ("tfds:fashion_mnist", (28, 28, 1))])
def test_tfds_data_source_path(name, shape):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load_dataset(name, "train", source="tfds")
        ref = tfds.data_source(name.removeprefix("tfds:"), split="train")
        expected_x = np.stack([ref[i]["image"] for i in range(len(ref))])
        expected_y = np.array([ref[i]["label"] for i in range(len(ref))])
    assert ds.images.shape == (12, *shape) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.images, expected_x)
    np.testing.assert_array_equal(ds.labels, expected_y)
    assert ds.num_classes == 10 and ds.source.startswith("tfds:")


def test_tfds_failure_explains_offline_fix(tmp_path):
    with pytest.raises(DataError, match=r"tfds:no_such_dataset_xyz .*--data-dir"):
        data.load_dataset("tfds:no_such_dataset_xyz", "train", data_dir=str(tmp_path))


# ----- on the device ----------------------------------------------------------------------


def test_to_float_range():
    x = jnp.array([[0, 128, 255]], jnp.uint8)
    y = data.to_float(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), np.array([[0, 128, 255]]) / 255.0, rtol=1e-7)


def _numpy_crop_flip(images, offsets, flips, pad):
    b, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.stack([padded[i, o[0]:o[0] + h, o[1]:o[1] + w] for i, o in enumerate(offsets)])
    return np.where(flips[:, None, None, None], out[:, :, ::-1], out)


def test_augment_matches_numpy_reference_and_is_keyed():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((16, 32, 32, 3), np.float32))
    key = jax.random.key(3)
    y = np.asarray(data.augment_crop_flip(key, x))
    # Recover the draws the function made (same key splitting) and compare with NumPy.
    k_off, k_flip = jax.random.split(key)
    offsets = np.asarray(jax.random.randint(k_off, (16, 2), 0, 9))
    flips = np.asarray(jax.random.bernoulli(k_flip, 0.5, (16,)))
    np.testing.assert_array_equal(y, _numpy_crop_flip(np.asarray(x), offsets, flips, 4))
    assert 0 < flips.sum() < 16 and len({tuple(o) for o in offsets}) > 1  # the draw varies per image
    np.testing.assert_array_equal(y, np.asarray(data.augment_crop_flip(key, x)))  # deterministic
    assert not np.array_equal(y, np.asarray(data.augment_crop_flip(jax.random.key(4), x)))
    # No flip and zero pad: the identity.
    np.testing.assert_array_equal(np.asarray(data.augment_crop_flip(key, x, pad=0, flip=False)), np.asarray(x))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        data.augment_crop_flip(key, x[0])


def test_as_device_arrays():
    ds = data.load_dataset("mnist", "test", max_examples=10)
    x, y = data.as_device_arrays(ds)
    assert x.dtype == jnp.uint8 and y.dtype == jnp.int32 and x.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(np.asarray(y), ds.labels)
