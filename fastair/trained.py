"""A trained run, read back: its best model and data set (for ``fastair evaluate``), a user's
own model from a factory and a state dict (``fastair evaluate --model-factory --checkpoint``), and
``fastair sample``: a PNG grid of samples from the model and one of test reconstructions.

What a run is comes from its checkpoints (hyper-parameters, data set, a fingerprint of the
data), never from ``config.json``, which is for people and may have been edited; where the two
disagree a note says so.
"""
import importlib
import math
import operator
import os
import sys

import torch
from torch import nn

from fastair.errors import CheckpointError, RunMismatch
from fastair.io import atomic_write_png, read_json
from fastair.training import load_checkpoint, rundir
from fastair.training.checkpoint import check_state_dict

__all__ = ["load_best_model", "load_factory_model", "require_run_dir", "image_grid",
           "add_sample_parser"]


def require_run_dir(run_dir):
    """A FileNotFoundError unless ``run_dir`` is a directory holding a trained run."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"{run_dir}: no such run directory (expected one written by "
                                "`fastair train`)")
    if not any(os.path.exists(os.path.join(run_dir, n)) for n in ("best.pt", "last.pt")):
        raise FileNotFoundError(f"{run_dir}: no best.pt or last.pt here; is it a directory "
                                "written by `fastair train`?")


def _best_checkpoint(run_dir, problem=None):
    """best.pt, or the copy of the best model inside last.pt when best.pt is missing or
    damaged (the same weights), or when ``problem`` (a sentence) says what is wrong with it;
    returns ``(checkpoint, notes, (file, entry))``, the file and entry the weights come from."""
    best, last = os.path.join(run_dir, "best.pt"), os.path.join(run_dir, "last.pt")
    if problem is None:
        try:
            return load_checkpoint(best), [], (best, "model")
        except (FileNotFoundError, CheckpointError) as err:
            problem = str(err)
    try:
        ck = load_checkpoint(last)
    except (FileNotFoundError, CheckpointError) as err:
        raise CheckpointError(f"{problem}; and last.pt cannot stand in for it: {err}") from None
    if ck.get("best_model") is None:
        raise CheckpointError(f"{problem}; last.pt holds no best model yet (epoch "
                              f"{ck.get('epoch')}): train the run further first")
    note = (f"{problem}; using the copy of the best model kept in last.pt (epoch "
            f"{ck['best_epoch']}, the same weights)")
    return {"model": ck["best_model"], "model_hparams": ck["model_hparams"],
            "identity": ck.get("identity"), "meta": ck.get("meta"),
            "epoch": ck["best_epoch"]}, [note], (last, "best_model")


def _config_notes(run_dir, hparams, meta):
    path = os.path.join(run_dir, "config.json")
    try:
        doc = read_json(path, "run config")
        saved_h = doc["model"]["hparams"]
        saved_data = doc.get("meta", {}).get("dataset")
    except FileNotFoundError:
        return []
    except (CheckpointError, KeyError, TypeError) as err:
        return [f"{path} is unreadable or incomplete ({err}); it is not needed"]
    notes = []
    differ = sorted(n for n in set(hparams) | set(saved_h or {})
                    if _plain(hparams.get(n)) != _plain((saved_h or {}).get(n)))
    if differ:
        notes.append(f"{path} disagrees with the checkpoint on {', '.join(differ)}; using the "
                     "checkpoint's values")
    if meta.get("dataset") is not None and saved_data not in (None, meta["dataset"]):
        notes.append(f"{path} names the data set {saved_data!r}, the checkpoint "
                     f"{meta['dataset']!r}; using the checkpoint's")
    return notes


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def load_best_model(run_dir):
    """The best model of a run (eval mode, CPU) and its data set.

    Returns:
        ``(model, data, notes)``: a :class:`fastair.models.VAE`, the
        :func:`fastair.data.load_dataset` splits, and sentences about fall-backs taken.
    Raises:
        CheckpointError: neither best.pt nor last.pt holds a readable best model.
        RunMismatch: the data set found now is not the one the run was trained on.
    """
    from fastair.data import load_dataset
    from fastair.models import VAE

    ck, notes, (source, entry) = _best_checkpoint(run_dir)
    hparams = dict(ck.get("model_hparams") or {})
    meta = ck.get("meta")
    if meta is None:  # fastair 0.1: the data set was recorded in config.json only
        meta = read_json(os.path.join(run_dir, "config.json"), "run config").get("meta", {})
    notes += _config_notes(run_dir, hparams, meta)
    try:
        model = VAE(**{**hparams, "hidden": tuple(hparams.get("hidden", (200, 200)))})
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{source}: the checkpoint's model cannot be rebuilt "
                              f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    # names and shapes first: load_state_dict's own error spans lines and names no file
    try:
        check_state_dict(ck["model"], source, entry, "best" if entry == "model" else "last",
                         model)
    except CheckpointError as err:
        if entry != "model":
            raise
        copy, first, (source, entry) = _best_checkpoint(run_dir, problem=str(err))
        check_state_dict(copy["model"], source, entry, "last", model)
        ck, notes = {**ck, "model": copy["model"]}, first + notes
    try:
        model.load_state_dict(ck["model"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{source}: the checkpoint's model cannot be loaded "
                              f"({type(err).__name__}: {' '.join(str(err).split())})") from None
    model.eval()
    data = load_dataset(meta.get("dataset", "mnist5k"), root=meta.get("data_root"))
    identity = ck.get("identity") or {}
    if identity.get("fingerprint") is not None:
        now = rundir.data_fingerprint(data.train, data.valid)
        if now != identity["fingerprint"]:
            raise RunMismatch(f"{run_dir}: the data set {meta.get('dataset')!r} found now "
                              f"(sizes {list(data.sizes)}) is not the one the run was trained "
                              f"on (sizes {identity.get('sizes')}, fingerprint "
                              f"{identity['fingerprint']} vs {now})")
    return model, data, notes


def _factory(spec):
    """The callable named by ``spec`` = ``"module.path:function"`` (``function`` may be dotted:
    ``"mypkg.models:VAE.build"``). The current directory is searched after ``sys.path``, as
    ``python -m`` does, so a ``mymodel.py`` beside the command is found."""
    where = f"--model-factory {spec}"
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr or ":" in attr:
        raise ValueError(f"{where}: expected MODULE:FUNCTION, e.g. mypkg.models:build (a "
                         "function called with no arguments that returns the nn.Module)")
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise ValueError(f"{where}: cannot import the module {module_name!r} ({type(err).__name__}"
                         f": {err}); put its directory on PYTHONPATH or install its package") \
            from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    target = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{where}: the module {module_name!r} "
                             f"({getattr(module, '__file__', '?')}) has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{where}: {attr!r} is a {type(target).__name__}, not a function that "
                         "builds the model")
    return target


def _user_state(path, ck):
    """The state dict inside a loaded checkpoint ``ck``: ``ck`` itself, or ``ck["model"]``."""
    state = ck.get("model") if isinstance(ck, dict) and isinstance(ck.get("model"), dict) else ck
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{path}: expected a state dict (torch.save(model.state_dict(), "
                              f"path)) or a dict with a 'model' entry holding one, got "
                              f"{type(ck).__name__}"
                              + (f" with keys {sorted(map(str, ck))[:8]}"
                                 if isinstance(ck, dict) else ""))
    return state


def _mismatch(path, spec, model, state):
    """A CheckpointError naming what differs between ``state`` and ``model``'s state dict, or
    None where they fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return None
    parts = [f"{label} {items[:5]}{f' and {len(items) - 5} more' if len(items) > 5 else ''}"
             for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                  ("shapes (checkpoint vs model)", shapes)) if items]
    hint = ""
    for prefix in ("module.", "_orig_mod."):
        if unexpected and all(k.startswith(prefix) for k in unexpected):
            hint = (f"; its keys start with {prefix!r} (saved from a DataParallel/DDP or "
                    "torch.compile wrapper): save the inner model's state_dict instead")
    return CheckpointError(
        f"{path}: does not fit the model that --model-factory {spec} builds "
        f"({type(model).__name__}): {'; '.join(parts)}{hint}. Save the checkpoint with "
        "torch.save(model.state_dict(), path) from the class and settings the factory builds, "
        "or change the factory to build that model")


def load_factory_model(spec, checkpoint):
    """A user's own model for ``fastair evaluate``: ``spec`` = ``"module:function"`` is imported
    and called with no arguments, and must return an ``nn.Module``; ``checkpoint`` is a file
    holding its state dict (``torch.save(model.state_dict(), path)``) or a dict with a
    ``"model"`` entry holding one (as fastair's own ``best.pt``). Loaded with
    ``weights_only=True`` (tensors and containers only) onto the CPU, strictly.

    Returns:
        the model, in eval mode, on the CPU.
    Raises:
        ValueError: ``spec`` is malformed, cannot be imported, names no callable, or the call
            fails or returns no ``nn.Module``.
        FileNotFoundError: no such checkpoint file.
        CheckpointError: the file cannot be read, holds no state dict, or its keys or shapes do
            not fit the model (the message names them and says what to do).
    """
    build = _factory(spec)
    where = f"--model-factory {spec}"
    try:
        model = build()
    except Exception as err:
        raise ValueError(f"{where}: calling it with no arguments failed ({type(err).__name__}: "
                         f"{(str(err).splitlines() or [''])[0]})") from err
    if not isinstance(model, nn.Module):
        raise ValueError(f"{where}: returned a {type(model).__name__}, not a torch.nn.Module; "
                         "the factory must build and return the model (its weights come from "
                         "--checkpoint)")
    path = os.fspath(checkpoint)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint (--checkpoint: a file written by "
                                "torch.save(model.state_dict(), path))")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        size = os.path.getsize(path)
        raise CheckpointError(
            f"{path}: cannot read this checkpoint ({type(err).__name__}, {size} bytes): it is "
            "truncated, not written by torch.save, or holds objects other than tensors and "
            "containers (loaded with weights_only=True); save only the state dict: "
            "torch.save(model.state_dict(), path)") from None
    state = _user_state(path, ck)
    problem = _mismatch(path, spec, model, state)
    if problem is not None:
        raise problem
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: cannot be loaded into the model that {where} builds "
                              f"({type(err).__name__}: {str(err).splitlines()[0]})") from None
    return model.eval()


PAPER, INK = 255, 0
"""The grey levels :func:`image_grid` gives the paper (pixel value 0) and the ink (value 1)."""


def image_grid(images, shape, columns, pad=2):
    """Tile images into one grayscale picture, black ink on white paper, as in the paper's figures.

    Args:
        images: ``[N, D]`` with ``D = h * w`` (or ``[N, h, w]``), a tensor or array-like of
            pixel values in ``[0, 1]``: 0 is paper, 1 is ink (a binarized digit, or the
            decoder's Bernoulli probabilities). Values outside are clamped to ``[0, 1]``; NaN is
            an error. Each row is one row-major ``h x w`` picture.
        shape: ``(h, w)``, the picture size.
        columns: pictures per row of the grid (``>= 1``); ``ceil(N / columns)`` rows, the last
            one left white where it is short.
        pad: white pixels (``>= 0``) between pictures and around the edge.

    Returns:
        uint8 numpy array ``[rows * (h + pad) + pad, columns * (w + pad) + pad]`` of grey levels
        for an 8-bit grayscale PNG (:func:`fastair.io.atomic_write_png`): a pixel value ``v``
        becomes ``round(255 * (1 - v))``, so 1 (ink) is 0 = black, 0 (paper) is 255 = white, and
        the padding is 255. Picture ``i`` has its top-left corner at row
        ``pad + (i // columns) * (h + pad)``, column ``pad + (i % columns) * (w + pad)``.

    Raises:
        ValueError: ``images`` not ``[N, h * w]`` or ``[N, h, w]`` with ``N >= 1``, NaN values,
            or ``shape``, ``columns``, ``pad`` out of range; the message gives what was got.
    """
    x = torch.as_tensor(images).detach()
    try:
        h, w = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f"image_grid: shape must be (h, w), got {shape!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"image_grid: shape (h, w) must be positive, got ({h}, {w})")
    columns, pad = _whole(columns, "columns", 1), _whole(pad, "pad", 0)
    if x.dim() == 3 and tuple(x.shape[1:]) == (h, w):
        x = x.reshape(len(x), h * w)
    if x.dim() != 2 or x.shape[1] != h * w or x.shape[0] < 1:
        raise ValueError(f"image_grid: images must be [N, {h * w}] (N >= 1 pictures of "
                         f"{h} x {w} = {h * w} pixels, one per row) or [N, {h}, {w}], got "
                         f"shape {list(x.shape)}")
    x = x.to(device="cpu", dtype=torch.float32)
    if bool(torch.isnan(x).any()):
        raise ValueError("image_grid: images hold NaN values (expected pixel values in [0, 1])")
    n = x.shape[0]
    rows = math.ceil(n / columns)
    pics = ((1 - x.clamp(0, 1)) * 255).round().to(torch.uint8)  # 1 (ink) -> 0 (black)
    cells = torch.full((rows * columns, h + pad, w + pad), PAPER, dtype=torch.uint8)
    cells[:n, :h, :w] = pics.view(n, h, w)
    grid = cells.view(rows, columns, h + pad, w + pad).permute(0, 2, 1, 3)
    out = torch.full((rows * (h + pad) + pad, columns * (w + pad) + pad), PAPER, dtype=torch.uint8)
    out[pad:, pad:] = grid.reshape(rows * (h + pad), columns * (w + pad))
    return out.numpy()


def _whole(value, name, least):
    """``value`` as an int ``>= least``, else a ValueError naming ``name`` (bools refused)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"image_grid: {name} must be an int >= {least}, got {value!r}") from None
    if value < least:
        raise ValueError(f"image_grid: {name} must be an int >= {least}, got {value}")
    return value


def _image_shape(x_dim, given):
    if given is not None:
        if given[0] * given[1] != x_dim:
            raise ValueError(f"--shape {given[0]} {given[1]}: {given[0] * given[1]} pixels, the "
                             f"model has {x_dim}")
        return tuple(given)
    side = math.isqrt(x_dim)
    if side * side != x_dim:
        raise ValueError(f"the model has {x_dim} pixels, not a square: give --shape H W")
    return side, side


def add_sample_parser(sub):
    p = sub.add_parser(
        "sample", help="PNG grids of samples and test reconstructions of a trained run",
        description="Draw samples z ~ N(0, I) from the best model of RUN_DIR and show the "
                    "mean of each pixel under p(x|z) as a grid (the Bernoulli probabilities; the "
                    "continuous Bernoulli's or the Gaussian's mean: VAE.pixel_means) "
                    "(RUN_DIR/samples.png), and show "
                    "test digits above their reconstructions, decoded from the encoder's mean "
                    "(RUN_DIR/reconstructions.png). Black ink on white paper (fastair.image_grid).")
    p.add_argument("run_dir", help="a directory written by `fastair train`")
    p.add_argument("--n", type=int, default=64, help="samples and reconstructions "
                   "(default: %(default)s)")
    p.add_argument("--columns", type=int, default=8, help="pictures per row "
                   "(default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and of the choice "
                   "of test examples (default: %(default)s)")
    p.add_argument("--shape", type=int, nargs=2, metavar=("H", "W"), default=None,
                   help="picture size (default: square, 28 28 for 784 pixels)")
    p.add_argument("--out", default=None,
                   help="directory of the two PNG files (default: RUN_DIR)")
    p.set_defaults(func=sample_command)
    return p


@torch.no_grad()
def sample_command(args):
    if args.n < 1 or args.columns < 1:
        raise ValueError(f"--n and --columns: expected ints >= 1, got {args.n}, {args.columns}")
    require_run_dir(args.run_dir)
    with rundir.hold(args.run_dir, create=False):
        model, data, notes = load_best_model(args.run_dir)
        for note in notes:
            print(f"note: {note}")
        shape = _image_shape(model.x_dim, args.shape)
        g = torch.Generator().manual_seed(args.seed)
        z = torch.randn(args.n, model.z_dim, generator=g)
        means = getattr(model, "pixel_means", None) or (
            lambda z: torch.sigmoid(model.decode_logits(z)))  # a Bernoulli model without it
        samples = means(z)
        pick = torch.randperm(len(data.test), generator=g)[:args.n]
        x = data.test[pick]
        mu, _ = model.encode(x)
        recon = means(mu)
        columns = min(args.columns, args.n)
        pairs = []  # a row of test digits, then the row of their reconstructions
        for start in range(0, len(x), columns):
            pairs += [x[start:start + columns], recon[start:start + columns]]
        out = args.out or args.run_dir
        os.makedirs(out, exist_ok=True)
        paths = [os.path.join(out, "samples.png"), os.path.join(out, "reconstructions.png")]
        atomic_write_png(paths[0], image_grid(samples, shape, columns))
        atomic_write_png(paths[1], _paired_grid(pairs, shape, columns))
    print(f"written: {', '.join(paths)}")
    return 0


def _paired_grid(rows, shape, columns):
    full = []
    for r in rows:
        blank = torch.zeros(columns - len(r), r.shape[1])  # a short last row stays white
        full.append(torch.cat([r.float(), blank]))
    return image_grid(torch.cat(full), shape, columns)
