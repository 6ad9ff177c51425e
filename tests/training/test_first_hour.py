"""A new user's first hour: the C++ build neither repeats nor hides, bars from the first second,
the same sign in every command, normal file modes, --version, LICENSE and CHANGELOG, and
`fastair sample`."""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from helpers import TINY_CLI

import fastair
import fastair.io
from fastair import cli
from fastair.backends import native

REPO = Path(__file__).resolve().parents[2]
TINY = TINY_CLI


def _native_or_skip():
    try:
        native.load()
    except RuntimeError as err:
        pytest.skip(f"no C++ toolchain: {err}")


def test_a_built_library_loads_without_ninja(tmp_path):
    """Another ninja on PATH (or another checkout) must not rebuild: here a 'ninja' that fails
    comes first on PATH, and the kernels still load, without a build message."""
    _native_or_skip()
    fake = tmp_path / "bin"
    fake.mkdir()
    marker = tmp_path / "ninja-ran"
    (fake / "ninja").write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    (fake / "ninja").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}{os.pathsep}{os.environ['PATH']}")
    code = ("import torch, fastair\nfrom fastair.backends import native\nnative.load()\n"
            "x = torch.zeros(2, 3)\nprint(float(fastair.bernoulli_log_prob(x, x).sum()))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert not marker.exists() and "building" not in out.stderr


def test_a_build_says_when_it_starts_and_ends(tmp_path, monkeypatch, capsys):
    from torch.utils import cpp_extension
    calls = []
    monkeypatch.setenv("FASTAIR_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", lambda **kw: calls.append(kw))
    native.load_or_build()
    err = capsys.readouterr().err
    assert len(calls) == 1 and str(tmp_path) in calls[0]["build_directory"]
    assert "fastair: building the C++ kernels" in err and "C++ kernels built in" in err


def test_train_prints_positive_bounds_like_evaluate(tiny_data, tmp_path, capsys):
    assert cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path), *TINY]) == 0
    out = capsys.readouterr().out
    assert "-L_1 of the best model (nats, lower is better)" in out
    row = next(line for line in out.splitlines() if line.startswith("vae "))
    values = [float(v) for v in row.split()[1:]]
    bounds = json.loads((tmp_path / "bounds.json").read_text())
    assert values == [round(-bounds["bounds"][s], 2) for s in ("train", "valid", "test")]
    assert all(v > 0 for v in values) and bounds["-L"]["test"] == -bounds["bounds"]["test"]


def test_progress_from_the_first_second(tiny_data, tmp_path, capsys):
    """`evaluate` says what it does before loading, its bar starts before the amortized bound;
    `train`'s bar shows positive -L."""
    run = str(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--run-dir", run, "--z-dim", "4", "--hidden",
                     "16"]) == 0
    err = capsys.readouterr().err
    assert "train (-L_1)" in err and "valid=" in err and "valid=-" not in err
    assert cli.main(["evaluate", run, "--max-steps", "1", "--k-eval", "8", "--chunk", "8"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"fastair evaluate: {run}, loading")
    assert "IW-SVI" in captured.err and "amortized bound" in captured.err


def test_reproduce_shows_epochs_and_evaluation_steps(tmp_path, capsys):
    from fastair.reproduce import ReproduceConfig, reproduce
    config = ReproduceConfig(seeds=1, families=("vae",), epochs=2, patience=0, k_svi=2,
                             max_steps=1, k_eval=4, chunk=4)
    try:
        reproduce(config, tmp_path, progress=True)
    except (FileNotFoundError, ImportError) as err:
        pytest.skip(f"mnist5k unavailable: {err}")
    err = capsys.readouterr().err
    assert "epoch 2, valid -L" in err  # the outer bar, per epoch
    assert "train (-L_1)" in err and "IW-SVI" in err  # the inner bars


def test_files_get_the_mode_of_the_umask(tiny_data, tmp_path, monkeypatch):
    old = os.umask(0o022)
    monkeypatch.setattr(fastair.io, "_mode", {})
    try:
        assert cli.main(["train", "--epochs", "1", "--run-dir", str(tmp_path), *TINY]) == 0
        modes = {n: (tmp_path / n).stat().st_mode & 0o777 for n in os.listdir(tmp_path)}
        assert set(modes.values()) == {0o644}, modes
        os.umask(0o077)
        monkeypatch.setattr(fastair.io, "_mode", {})
        fastair.io.atomic_write_text(tmp_path / "private.txt", "x")
        assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_version_license_and_changelog(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"fastair {fastair.__version__} (torch ")
    license_text = (REPO / "LICENSE").read_text()
    assert "MIT License" in license_text and "fastair" in license_text
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert f"## {fastair.__version__}" in changelog


def _png_size_and_pixels(path):
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, color = struct.unpack(">IIBB", data[16:26])
    assert (depth, color) == (8, 0)
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8:start - 4])[0]
    raw = zlib.decompress(data[start:start + length])
    rows = [raw[i * (width + 1) + 1:(i + 1) * (width + 1)] for i in range(height)]
    return width, height, torch.tensor([list(r) for r in rows])


def test_png_writer_round_trips():
    image = (torch.arange(12 * 7) % 256).to(torch.uint8).view(12, 7).numpy()
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fastair-png-{os.getpid()}.png"
    try:
        fastair.io.atomic_write_png(path, image)
        w, h, pixels = _png_size_and_pixels(path)
        assert (w, h) == (7, 12) and torch.equal(pixels.to(torch.uint8), torch.from_numpy(image))
    finally:
        path.unlink(missing_ok=True)


def test_sample_writes_grids_of_samples_and_reconstructions(tiny_data, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["train", "--epochs", "1", "--run-dir", run, *TINY]) == 0
    out = tmp_path / "pictures"
    assert cli.main(["sample", run, "--n", "10", "--columns", "4", "--out", str(out)]) == 0
    w, h, samples = _png_size_and_pixels(out / "samples.png")
    assert (w, h) == (4 * 30 + 2, 3 * 30 + 2)  # 28 + 2 pad per picture, 2 at the edge
    assert samples.float().std() > 5  # pictures, not a blank page
    w, h, _ = _png_size_and_pixels(out / "reconstructions.png")
    assert (w, h) == (4 * 30 + 2, 6 * 30 + 2)  # 3 rows of test digits, each with its row below
    assert cli.main(["sample", run, "--shape", "7", "7"]) == 2
    assert "49 pixels, the model has 784" in capsys.readouterr().err
    shutil.rmtree(out)
