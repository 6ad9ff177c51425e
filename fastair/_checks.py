"""Argument checks shared by the public ops: clear errors that name the argument."""
import torch

FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def shape_str(shape):
    return "[" + ", ".join(str(s) for s in shape) + "]"


def check_tensor(name, t, *, floating=True, allow_bool=False):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    ok = t.dtype in FLOATING or (allow_bool and (t.dtype == torch.bool or not t.is_floating_point()
                                                 and not t.is_complex()))
    if floating and not ok:
        kinds = "a floating-point (or bool/integer 0/1)" if allow_bool else "a floating-point"
        raise TypeError(f"{name}: expected {kinds} tensor (float16, bfloat16, float32 or "
                        f"float64), got {t.dtype}")


def check_same_device(**tensors):
    items = [(n, t) for n, t in tensors.items() if t is not None]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{name}: expected a tensor on {first.device} like {first_name}, "
                             f"got one on {t.device}")


def check_shape(name, t, expected, described):
    """Raise a ValueError unless ``t.shape == expected``; ``described`` names the dims."""
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name}: expected shape {described} = {shape_str(expected)}, "
                         f"got {shape_str(t.shape)}")


def check_broadcasts_to(name, t, shape, target_name):
    """``t`` must broadcast to ``shape`` without changing it (no silent batch broadcasting)."""
    ok = t.dim() <= len(shape) and all(
        s == 1 or s == full for s, full in zip(reversed(t.shape), reversed(shape)))
    if not ok:
        raise ValueError(f"{name}: expected a shape that broadcasts to the shape of {target_name}, "
                         f"{shape_str(shape)} (equal or 1 in each trailing dim), "
                         f"got {shape_str(t.shape)}")


def _check_finite(name, x, expected):
    bad = ~torch.isfinite(x)
    if bad.any():
        kinds = [n for n, m in (("NaN", torch.isnan(x)), ("inf", torch.isinf(x))) if m.any()]
        raise ValueError(f"{name}: {int(bad.sum())} entries are not finite "
                         f"({' and '.join(kinds)}); expected {expected}")


def check_bernoulli_targets(name, x):
    """``x`` must be finite and in [0, 1] (Bernoulli targets): a ValueError saying what it
    holds otherwise. A reduction over ``x`` read on the host: cheap, but it synchronizes with a
    GPU, so the ops themselves do not call it (their callers do, once per batch or data set)."""
    _check_finite(name, x, "Bernoulli targets in [0, 1]")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        hint = (" (logits or centred data? pass probabilities in [0, 1])" if lo < 0 else
                " (0-255 pixels? divide by 255 and binarize)" if hi > 1.5 else "")
        raise ValueError(f"{name}: values range over [{lo:g}, {hi:g}], outside [0, 1]{hint}")


def check_unit_interval(name, x):
    """``x`` must be finite and in [0, 1], any value there (the continuous Bernoulli's data,
    grey levels): a ValueError saying what it holds and what to do otherwise. Read on the host,
    as :func:`check_bernoulli_targets`."""
    _check_finite(name, x, "data in [0, 1] for the continuous Bernoulli likelihood")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0 or hi > 1:
        hint = (" (centred or standardized data? pass values in [0, 1], or use "
                "likelihood='gaussian')" if lo < 0 else
                " (0-255 pixels? divide by 255)" if hi > 1.5 else "")
        raise ValueError(f"{name}: values range over [{lo:g}, {hi:g}], outside [0, 1], where "
                         f"the continuous Bernoulli likelihood is defined{hint}")


def check_finite(name, x):
    """``x`` must be finite (the Gaussian likelihood's data): a ValueError naming the NaN and
    inf entries otherwise. Read on the host, as :func:`check_bernoulli_targets`."""
    _check_finite(name, x, "finite data for the Gaussian likelihood (drop or impute the "
                           "missing values)")


_DATA_CHECKS = {"bernoulli": check_bernoulli_targets,
                "continuous_bernoulli": check_unit_interval,
                "gaussian": check_finite}


def check_likelihood_data(name, x, likelihood="bernoulli"):
    """The data check of ``likelihood`` (``"bernoulli"``, ``"continuous_bernoulli"`` or
    ``"gaussian"``): finite and in [0, 1] for the first two, finite for the Gaussian."""
    _DATA_CHECKS[likelihood](name, x)
