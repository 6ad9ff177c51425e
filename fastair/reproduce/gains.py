"""The paper's Figure 2 as numbers: each regularized run's gain over the unregularized model of
the same k and seed, and the two claims the paper draws from it.

``gain = (-ln p(x) of IWAE-k, seed s) - (-ln p(x) of the regularized run, seed s)`` in nats on
test; positive means the regularizer helped. Gains are paired by seed (the same seed gives the
same initial weights and data order), so their spread over seeds is the spread of a difference,
not of two absolute numbers.

The claims (Shu et al. 2018, section 4.2):

1. *robustness*: too strong a regularizer costs less at larger k, so the gain at the strongest
   grid value grows with k;
2. *the best strength grows with k*: the value chosen on validation is at least as strong at a
   larger k (larger ``sigma``, smaller ``H``). A choice is only as firm as its margin: values
   whose validation ``-ln p(x)`` is within 2 SE of the chosen one's (paired by seed) are tied
   with it, and a step that a tie could undo is called noise.
"""
import math
import statistics

from fastair.reproduce.protocol import family_label, get_family

__all__ = ["seed_gains", "validation_ties", "gain_claims", "stronger_first", "markdown_claims"]


def stronger_first(family, strengths):
    """``strengths`` ordered from the strongest regularizer to the weakest: descending for
    ``sigma`` (more input noise), ascending for ``H`` (a tighter cap)."""
    return sorted(strengths, reverse=get_family(family).knob == "sigma")


def _test_nll(run):
    value = run["test"]["-ln p(x)"]
    return math.nan if value is None else float(value)


def seed_gains(runs):
    """Per (k, family, strength) the gains over that k's plain model, paired by seed.

    Args:
        runs: finished run results (dicts of ``result.json``, as in ``results.json["runs"]``).
    Returns:
        rows ``{"k", "family", "label", "strength", "gain", "gain_std", "gain_se", "n",
        "seed_gains"}`` sorted by k, family, strength; ``gain_std`` is the sample std over seeds
        (NaN for one seed), ``gain_se = gain_std / sqrt(n)``. Runs without a test value (not
        tested) or without a baseline of their k and seed are left out.
    """
    base = {(r["k"], r["seed"]): _test_nll(r) for r in runs if r["family"] == "vae"}
    groups = {}
    for r in runs:
        if get_family(r["family"]).knob is None:
            continue
        b = base.get((r["k"], r["seed"]), math.nan)
        g = b - _test_nll(r)
        if not math.isnan(g):
            groups.setdefault((r["k"], r["family"], r["strength"]), []).append(
                (r["seed"], g, r["label"]))
    rows = []
    for (k, fam, strength), items in sorted(groups.items()):
        items.sort()
        gains = [g for _, g, _ in items]
        std = statistics.stdev(gains) if len(gains) > 1 else math.nan
        rows.append({"k": k, "family": fam, "label": items[0][2], "strength": strength,
                     "gain": statistics.fmean(gains), "gain_std": std,
                     "gain_se": std / math.sqrt(len(gains)), "n": len(gains),
                     "seed_gains": {s: g for s, g, _ in items}})
    return rows


def validation_ties(runs, chosen):
    """Per (k, family) the grid values tied with the chosen one on validation.

    A value is tied when its validation ``-ln p(x)`` minus the chosen value's, paired by seed,
    has a mean within 2 SE of zero (at least two seeds are needed to tell; with one, nothing
    is called tied). Returns ``{(k, family): [strength, ...]}`` (the chosen value itself not
    included), for the keys of ``chosen``."""
    valid = {}
    for r in runs:
        v = r["valid"]["-ln p(x)"]
        if v is not None and not math.isnan(float(v)):
            valid.setdefault((r["k"], r["family"], r["strength"]), {})[r["seed"]] = float(v)
    ties = {}
    for (k, fam), pick in chosen.items():
        best = valid.get((k, fam, pick), {})
        tied = []
        for (k2, fam2, strength), by_seed in valid.items():
            if (k2, fam2) != (k, fam) or strength == pick:
                continue
            diffs = [by_seed[s] - best[s] for s in by_seed if s in best]
            if len(diffs) > 1:
                se = statistics.stdev(diffs) / math.sqrt(len(diffs))
                if abs(statistics.fmean(diffs)) <= 2 * se:
                    tied.append(strength)
        ties[(k, fam)] = sorted(tied)
    return ties


def _trend(values):
    """``"grows"`` if the sequence never falls and ends higher, ``"falls"`` the mirror,
    ``"flat"`` if all equal, else ``"mixed"``."""
    steps = [b - a for a, b in zip(values, values[1:])]
    if all(s == 0 for s in steps):
        return "flat"
    if all(s >= 0 for s in steps):
        return "grows"
    if all(s <= 0 for s in steps):
        return "falls"
    return "mixed"


def gain_claims(gains, chosen, ties=None):
    """Test the two claims per regularizer family.

    Args:
        gains: rows of :func:`seed_gains`.
        chosen: ``{(k, family): strength}`` chosen on validation.
        ties: :func:`validation_ties` of the runs (None: every choice taken as firm).
    Returns:
        ``{family: {"ks", "strongest", "strongest_gain": [(k, gain, se)], "robust": trend,
        "pairs": [(k1, k2, diff, se)], "chosen": [(k, strength)], "best_grows": trend}}``.
        ``robust`` is the trend of the gain at the strongest value common to every k
        (``"grows"`` supports claim 1); ``pairs`` gives each adjacent pair of k's difference
        with its standard error ``sqrt(se1^2 + se2^2)``; ``best_grows`` is the trend of the
        chosen value's rank from weak to strong (``"grows"`` supports claim 2); ``ties``
        gives each k's tied values and ``unsure`` the adjacent pairs ``(k1, k2)`` whose
        order a tie could reverse or flatten.
    """
    ties = ties or {}
    out = {}
    for fam in sorted({g["family"] for g in gains}):
        rows = [g for g in gains if g["family"] == fam]
        ks = sorted({g["k"] for g in rows})
        common = set.intersection(*({g["strength"] for g in rows if g["k"] == k} for k in ks))
        if not common:
            continue
        strongest = stronger_first(fam, common)[0]
        at = {g["k"]: g for g in rows if g["strength"] == strongest}
        seq = [(k, at[k]["gain"], at[k]["gain_se"]) for k in ks]
        pairs = [(a[0], b[0], b[1] - a[1], math.hypot(a[2], b[2])) for a, b in zip(seq, seq[1:])]
        order = stronger_first(fam, {g["strength"] for g in rows})[::-1]  # weak -> strong
        picks = [(k, chosen[(k, fam)]) for k in ks if (k, fam) in chosen]
        ranks = [order.index(s) for _, s in picks if s in order]
        label = f"{family_label(fam, 1)} / {family_label(fam, 2)}"
        tied = {k: ties.get((k, fam), []) for k, _ in picks}
        out[fam] = {"label": label, "ks": ks, "strongest": strongest,
                    "strongest_gain": seq, "robust": _trend([g for _, g, _ in seq]),
                    "pairs": pairs, "chosen": picks, "ties": tied,
                    "unsure": _unsure(picks, tied, order),
                    "best_grows": _trend(ranks) if len(ranks) == len(picks) else "mixed"}
    return out


def _unsure(picks, tied, order):
    """Adjacent (k1, k2) whose step in the chosen value's rank some tied value could undo: a
    rise is unsure when k2 ties with a value no stronger than k1's pick, or k1 with one no
    weaker than k2's; no change is unsure when either ties with any value."""
    out = []
    for (k1, p1), (k2, p2) in zip(picks, picks[1:]):
        if p1 not in order or p2 not in order:
            continue
        r1, r2 = order.index(p1), order.index(p2)
        t1 = [order.index(s) for s in tied[k1] if s in order]
        t2 = [order.index(s) for s in tied[k2] if s in order]
        if r2 > r1:
            shaky = any(t <= r1 for t in t2) or any(t >= r2 for t in t1)
        elif r2 == r1:
            shaky = bool(t1 or t2)
        else:
            shaky = any(t >= r1 for t in t2) or any(t <= r2 for t in t1)
        if shaky:
            out.append((k1, k2))
    return out


def _se(v):
    return "–" if math.isnan(v) else f"{v:.2f}"


_VERDICT = {"grows": "holds", "flat": "does not hold (no change with k)",
            "falls": "does not hold (the opposite)", "mixed": "does not hold (no monotone trend)"}


def markdown_claims(claims):
    """The claims' test as Markdown: a table per claim and a one-line verdict per family."""
    out = ["Claim 1, robustness: the gain over IWAE-k at the strongest grid value, mean ± SE "
           "over seeds (paired by seed); a difference between k is resolved when it exceeds "
           "2 SE.\n", "| regularizer | strongest | " + " | ".join(
               f"k = {k}" for k in _all_ks(claims)) + " | differences | verdict |",
           "|---|---|" + "---|" * len(_all_ks(claims)) + "---|---|"]
    for fam, c in claims.items():
        by_k = {k: f"{g:+.2f} ± {_se(se)}" for k, g, se in c["strongest_gain"]}
        diffs = "; ".join(
            f"{k2} vs {k1}: {d:+.2f} ± {_se(se)}"
            + ("" if math.isnan(se) or abs(d) > 2 * se else " (noise)")
            for k1, k2, d, se in c["pairs"])
        out.append(f"| {c['label']} | {_knob(fam)} = {c['strongest']:g} | "
                   + " | ".join(by_k.get(k, "–") for k in _all_ks(claims))
                   + f" | {diffs} | {_robust_verdict(c)} |")
    out += ["", "Claim 2, the best strength grows with k: the value chosen on validation at "
            "each k (stronger = larger σ, smaller H); in brackets the values tied with it on "
            "validation (paired by seed, within 2 SE).\n",
            "| regularizer | " + " | ".join(f"k = {k}" for k in _all_ks(claims))
            + " | verdict |", "|---|" + "---|" * len(_all_ks(claims)) + "---|"]
    for fam, c in claims.items():
        picks, ties = dict(c["chosen"]), c.get("ties", {})
        out.append(f"| {c['label']} | " + " | ".join(
            _pick(fam, picks[k], ties.get(k, [])) if k in picks else "–"
            for k in _all_ks(claims)) + f" | {_best_verdict(c)} |")
    return "\n".join(out) + "\n"


def _pick(fam, pick, tied):
    text = f"{_knob(fam)} = {pick:g}"
    return text + (f" (tied: {', '.join(f'{t:g}' for t in tied)})" if tied else "")


def _best_verdict(c):
    verdict = _VERDICT[c["best_grows"]]
    unsure = [f"{k2} vs {k1}" for k1, k2 in c.get("unsure", [])]
    if not unsure:
        return verdict
    if c["best_grows"] == "grows":
        verdict = "holds in the choices"
    return f"{verdict}; {', '.join(unsure)} within noise (a tie on validation)"


def _robust_verdict(c):
    verdict = _VERDICT[c["robust"]]
    unresolved = [f"{k2} vs {k1}" for k1, k2, d, se in c["pairs"]
                  if math.isnan(se) or abs(d) <= 2 * se]
    if c["robust"] == "grows" and unresolved:
        return f"holds in the means; {', '.join(unresolved)} within noise"
    return verdict


def _all_ks(claims):
    return sorted({k for c in claims.values() for k in c["ks"]})


def _knob(fam):
    return "σ" if get_family(fam).knob == "sigma" else "H"
