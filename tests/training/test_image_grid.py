"""fastair.image_grid: the size of the grid, black ink on white paper (pixel value 1 -> grey
level 0), white padding, clear errors; and `fastair sample` drawing its PNGs with it."""
import struct
import subprocess
import sys
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import fastair
from fastair import cli
from fastair import trained as trained_mod

WHITE, BLACK = 255, 0


def _png_pixels(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (depth, color) == (8, 0)  # 8-bit grayscale: 0 black, 255 white
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8:start - 4])[0]
    raw = zlib.decompress(data[start:start + length])
    return np.array([list(raw[i * (width + 1) + 1:(i + 1) * (width + 1)])
                     for i in range(height)], dtype=np.uint8)


def _cells(n, columns, h, w, pad):
    """Mask of the grid's pixels that belong to one of the n pictures."""
    rows = -(-n // columns)
    mask = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad), dtype=bool)
    for i in range(n):
        top, left = pad + (i // columns) * (h + pad), pad + (i % columns) * (w + pad)
        mask[top:top + h, left:left + w] = True
    return mask


def test_exported_lazily_from_fastair():
    assert fastair.image_grid is trained_mod.image_grid and "image_grid" in fastair.__all__
    code = ("import sys, fastair; a = 'fastair.trained' in sys.modules; "
            "g = fastair.image_grid; print(a, 'fastair.trained' in sys.modules, g.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.stdout.split() == ["False", "True", "image_grid"], out.stderr


@pytest.mark.parametrize("n, columns, pad, h, w", [
    (10, 4, 2, 28, 28), (1, 1, 0, 3, 5), (7, 7, 3, 4, 2), (9, 3, 1, 2, 2), (5, 8, 2, 6, 6)])
def test_shape_and_dtype(n, columns, pad, h, w):
    g = fastair.image_grid(torch.rand(n, h * w), (h, w), columns, pad=pad)
    rows = -(-n // columns)
    assert isinstance(g, np.ndarray) and g.dtype == np.uint8
    assert g.shape == (rows * (h + pad) + pad, columns * (w + pad) + pad)
    assert g.shape == (rows * h + (rows + 1) * pad, columns * w + (columns + 1) * pad)


def test_black_ink_on_white_paper_and_white_padding():
    n, columns, pad, h, w = 5, 3, 2, 4, 3  # 2 rows, the second one short
    ink = fastair.image_grid(torch.ones(n, h * w), (h, w), columns, pad=pad)
    paper = fastair.image_grid(torch.zeros(n, h * w), (h, w), columns, pad=pad)
    cells = _cells(n, columns, h, w, pad)
    assert (ink[cells] == BLACK).all()  # value 1 (ink) is black
    assert (ink[~cells] == WHITE).all()  # the padding, and the short last row, are white
    assert (paper == WHITE).all()  # value 0 (paper) is white
    assert ink[0].tolist() == [WHITE] * ink.shape[1] and (ink[:, 0] == WHITE).all()


def test_each_pixel_lands_in_its_place_with_its_grey_level():
    h, w, columns, pad = 2, 3, 2, 1
    images = torch.zeros(3, h * w)
    images[0, 0] = 1.0  # picture 0, row 0, column 0
    images[1, 5] = 0.5  # picture 1, row 1, column 2
    images[2, 3] = 2.0  # picture 2, row 1, column 0: clamped to 1
    images[2, 4] = -1.0  # clamped to 0
    g = fastair.image_grid(images, (h, w), columns, pad=pad)
    expected = np.full((2 * (h + pad) + pad, columns * (w + pad) + pad), WHITE, dtype=np.uint8)
    expected[pad + 0, pad + 0] = BLACK
    expected[pad + 1, pad + (w + pad) + 2] = 128  # round(255 * (1 - 0.5))
    expected[pad + (h + pad) + 1, pad + 0] = BLACK
    assert np.array_equal(g, expected)
    # [N, h, w] and numpy input give the same picture
    assert np.array_equal(fastair.image_grid(images.view(3, h, w).numpy(), (h, w), columns,
                                             pad=pad), g)


@pytest.mark.parametrize("kwargs, message", [
    ({"images": torch.zeros(3, 5)}, r"images must be \[N, 4\].*got shape \[3, 5\]"),
    ({"images": torch.zeros(3, 2, 3)}, r"images must be \[N, 4\].*\[N, 2, 2\], got shape"),
    ({"images": torch.zeros(4)}, r"got shape \[4\]"),
    ({"images": torch.zeros(0, 4)}, r"N >= 1.*got shape \[0, 4\]"),
    ({"images": torch.full((1, 4), float("nan"))}, r"NaN"),
    ({"shape": (2,)}, r"shape must be \(h, w\)"),
    ({"shape": (0, 4)}, r"must be positive"),
    ({"columns": 0}, r"columns must be an int >= 1, got 0"),
    ({"columns": 1.5}, r"columns must be an int >= 1, got 1.5"),
    ({"pad": -1}, r"pad must be an int >= 0, got -1"),
])
def test_wrong_input_raises_a_clear_error(kwargs, message):
    args = {"images": torch.zeros(2, 4), "shape": (2, 2), "columns": 2, "pad": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        fastair.image_grid(**args)


class _InkModel:
    """A stand-in for a trained model: 2 x 2 pictures, every decoded pixel almost surely ink."""

    x_dim, z_dim = 4, 1

    def decode_logits(self, z):
        return torch.full((len(z), self.x_dim), 30.0)

    def encode(self, x):
        return torch.zeros(len(x), self.z_dim), torch.zeros(len(x), self.z_dim)


def test_sample_command_draws_black_ink_on_white(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"")  # read by the stand-in below, never by torch
    test = torch.zeros(6, 4)  # blank test digits: white pictures above black reconstructions
    monkeypatch.setattr(trained_mod, "load_best_model",
                        lambda run_dir: (_InkModel(), SimpleNamespace(test=test), []))
    calls = []
    real = trained_mod.image_grid
    monkeypatch.setattr(trained_mod, "image_grid", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert cli.main(["sample", str(run), "--n", "5", "--columns", "3"]) == 0
    assert calls  # the command draws with image_grid
    samples = _png_pixels(run / "samples.png")
    cells = _cells(5, 3, 2, 2, 2)
    assert samples.shape == cells.shape
    assert (samples[cells] == BLACK).all() and (samples[~cells] == WHITE).all()
    recon = _png_pixels(run / "reconstructions.png")  # rows: digits, their reconstructions, ...
    assert recon.shape == (4 * 4 + 2, 3 * 4 + 2)
    digits, ink = recon[2:4, 2:4], recon[6:8, 2:4]
    assert (digits == WHITE).all() and (ink == BLACK).all()
