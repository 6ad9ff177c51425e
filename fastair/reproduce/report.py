"""From finished runs to the paper's tables: choose each family's grid value on validation
``ln p(x)``, average over seeds, and write JSON, CSV, Markdown and PNG figures.

Columns (nats, lower is better, as in the paper): ``-ln p(x)`` (IW-SVI on test), ``Delta_inf``
(the inference gap ``ln p(x) - L(x)`` of the encoder on test) and ``-L(x)`` (the amortized bound
at the model's k), each ``mean ± std`` over seeds (sample std; ``–`` for one seed).
"""
import math
import os
import statistics

from fastair.io import atomic_write_csv, atomic_write_json, atomic_write_text
from fastair.reproduce.figures import plot_gain_curves, plot_strength_curves
from fastair.reproduce.gains import gain_claims, markdown_claims, seed_gains, validation_ties
from fastair.reproduce.paper import paper_note, paper_numbers, paper_reference
from fastair.reproduce.protocol import FAMILIES, family_label, get_family

__all__ = ["summarize", "write_report", "markdown_tables", "across_k"]

_METRICS = {"test_nll": ("test", "-ln p(x)"), "test_gap": ("test", "gap"),
            "test_nelbo": ("test", "-L(x)"), "valid_nll": ("valid", "-ln p(x)")}


def _stats(values):
    if any(math.isnan(v) for v in values):  # a run without this metric (not tested)
        return math.nan, math.nan
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return mean, std


def _grid_points(results):
    """``{(k, family, strength): row}`` with the mean and std over seeds of every metric."""
    groups = {}
    for r in results:
        groups.setdefault((r["k"], r["family"], r["strength"]), []).append(r)
    points = {}
    for key, runs in groups.items():
        row = {"k": key[0], "family": key[1], "strength": key[2], "seeds": len(runs),
               "label": family_label(key[1], key[0])}
        for name, (split, column) in _METRICS.items():
            row[name], row[name + "_std"] = _stats([r[split][column] for r in runs])
        row.update(_diagnostics(runs))
        points[key] = row
    return points


def _diagnostics(runs):
    """IW-SVI diagnostics of a grid point over its seeds, both splits: the median of the
    per-run median ESS, the largest standard error, examples at the step cap, unreliable ones."""
    parts = [r[split] for r in runs for split in ("valid", "test")
             if r[split].get("evaluated", True)]
    if not all("median_ess" in p for p in parts):  # results of an older evaluator
        return {"median_ess": math.nan, "max_se": math.nan, "n_hit_cap": -1, "n_unreliable": -1}
    return {"median_ess": statistics.median(p["median_ess"] for p in parts),
            "max_se": max(p["max_se"] for p in parts),
            "n_hit_cap": sum(p["n_hit_cap"] for p in parts),
            "n_unreliable": sum(p["n_unreliable"] for p in parts)}


def summarize(results):
    """Selection and aggregation of finished run results (dicts of ``result.json``).

    Returns ``{"grid": [rows], "table": [rows]}``: one grid row per (k, family, strength) with
    means and stds over seeds, and per (k, family) the row of the strength with the lowest mean
    validation ``-ln p(x)`` (``chosen`` marks it in the grid).
    """
    points = _grid_points(results)
    best = {}
    for (k, fam, _), row in points.items():
        if (k, fam) not in best or row["valid_nll"] < best[(k, fam)]["valid_nll"]:
            best[(k, fam)] = row
    for row in points.values():
        row["chosen"] = best[(row["k"], row["family"])] is row
    order = {f.key: i for i, f in enumerate(FAMILIES)}

    def sort_key(row):
        return row["k"], order.get(row["family"], 99), row["strength"] or 0.0

    return {"grid": sorted(points.values(), key=sort_key),
            "table": sorted(best.values(), key=sort_key)}


def _pm(mean, std):
    if math.isnan(mean):  # not evaluated (a grid value not chosen, with test_chosen_only)
        return "–"
    return f"{mean:.2f} ± {'–' if math.isnan(std) else f'{std:.2f}'}"


def _strength(row):
    knob = get_family(row["family"]).knob
    return "–" if knob is None else f"{'σ' if knob == 'sigma' else 'H'} = {row['strength']:g}"


def _paper_cells(row, ref, with_delta):
    """The paper's three numbers (and ours minus the paper's) for a table row."""
    if ref is None:
        return " – |" * (6 if with_delta else 3)
    cells = []
    for ours, theirs, spread in ((row["test_nll"], ref.nll, ref.nll_std),
                                 (row["test_gap"], ref.gap, ref.gap_std),
                                 (row["test_nelbo"], ref.nbound, ref.nbound_std)):
        cells.append(f" {theirs:.2f} ± {spread:.2f} |")
        if with_delta:
            cells.append(f" {ours - theirs:+.2f} |")
    return "".join(cells)


def _table(summary, dataset, k):
    paper = paper_numbers(dataset, k)
    ref_name, reference = paper_reference(dataset, k)
    shown, with_delta = (paper, True) if paper else (reference, False)
    head = "| model | chosen on validation | -ln p(x) | Δinf | -L(x) | seeds |"
    rule = "|---|---|---|---|---|---|"
    if shown:
        tag = "paper" if paper else f"paper, {ref_name} (reference)"
        for column in ("-ln p(x)", "Δinf", "-L(x)"):
            head += f" {tag} {column} |" + (" Δ |" if with_delta else "")
            rule += "---|" + ("---|" if with_delta else "")
    out = [f"### {dataset}, k = {k} (test set, nats, lower is better)\n", head, rule]
    for row in (r for r in summary["table"] if r["k"] == k):
        line = (f"| {row['label']} | {_strength(row)} | "
                f"{_pm(row['test_nll'], row['test_nll_std'])} | "
                f"{_pm(row['test_gap'], row['test_gap_std'])} | "
                f"{_pm(row['test_nelbo'], row['test_nelbo_std'])} | {row['seeds']} |")
        if shown:
            line += _paper_cells(row, shown.get(row["label"]), with_delta)
        out.append(line)
    return out + ["", paper_note(dataset, k), ""]


def _num(value, digits):
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _count(n):
    return "–" if n < 0 else str(n)


def _paired(gains, row):
    g = gains.get((row["k"], row["family"], row["strength"]))
    if g is None:
        return "–"
    se = "–" if math.isnan(g["gain_se"]) else f"{g['gain_se']:.2f}"
    return f"{g['gain']:+.2f} ± {se}"


def markdown_tables(summary, dataset, results=None):
    """The tables in the paper's form (one per k, the paper's numbers beside), then the grids
    with the IW-SVI diagnostics, as Markdown text. With ``results`` (the runs), the grid also
    gives each value's test gain over the plain model of its k, paired by seed (mean ± SE)."""
    gains = {(g["k"], g["family"], g["strength"]): g for g in seed_gains(results or [])}
    out = []
    for k in sorted({row["k"] for row in summary["table"]}):
        out += _table(summary, dataset, k)
        out += [f"Grid at k = {k} (each value's mean over seeds; * = chosen). IW-SVI diagnostics "
                "over validation and test: the median ESS of the k_eval final weights (median over "
                "runs), the largest per-example standard error, and how many examples hit the "
                "step cap or were flagged unreliable. Gain, paired: the plain model's test "
                "-ln p(x) minus this value's, seed by seed (positive: better), mean ± SE:\n",
                "| model | strength | valid -ln p(x) | test -ln p(x) | gain, paired | test Δinf "
                "| test -L(x) | median ESS | max SE | at cap | unreliable |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for row in (r for r in summary["grid"] if r["k"] == k):
            mark = " *" if row["chosen"] else ""
            out.append(f"| {row['label']} | {_strength(row)}{mark} | "
                       f"{_pm(row['valid_nll'], row['valid_nll_std'])} | "
                       f"{_pm(row['test_nll'], row['test_nll_std'])} | {_paired(gains, row)} | "
                       f"{_pm(row['test_gap'], row['test_gap_std'])} | "
                       f"{_pm(row['test_nelbo'], row['test_nelbo_std'])} | "
                       f"{_num(row['median_ess'], 0)} | {_num(row['max_se'], 2)} | "
                       f"{_count(row['n_hit_cap'])} | {_count(row['n_unreliable'])} |")
        out.append("")
    return "\n".join(out)


_RUN_COLUMNS = ("name", "label", "k", "family", "strength", "seed", "best_epoch", "epochs",
                "stop_reason", "train_bound", "valid_bound", "train_seconds", "valid_nll",
                "valid_gap", "test_nll", "test_gap", "test_nelbo", "test_median_ess",
                "test_max_se", "test_n_hit_cap", "test_mean_steps", "eval_seconds")
_GRID_COLUMNS = ("k", "label", "family", "strength", "seeds", "chosen") + tuple(
    c for name in _METRICS for c in (name, name + "_std")) + (
    "median_ess", "max_se", "n_hit_cap", "n_unreliable")


def _run_row(r):
    return dict(r, valid_nll=r["valid"]["-ln p(x)"], valid_gap=r["valid"]["gap"],
                test_nll=r["test"]["-ln p(x)"], test_gap=r["test"]["gap"],
                test_nelbo=r["test"]["-L(x)"], test_median_ess=r["test"].get("median_ess"),
                test_max_se=r["test"].get("max_se"), test_n_hit_cap=r["test"].get("n_hit_cap"),
                test_mean_steps=r["test"].get("mean_steps"),
                eval_seconds=r["valid"]["seconds"] + r["test"]["seconds"])


_GAIN_COLUMNS = ("k", "label", "family", "strength", "n", "gain", "gain_std", "gain_se")


def across_k(root, results, summary, prefix="fig2"):
    """Figure 2 and its claims for results with two or more k: writes ``gains.csv`` and the
    ``<prefix>_<family>.png`` figures under ``root``; returns ``(markdown, paths)``, empty
    when there is one k."""
    if len({r["k"] for r in results}) < 2:
        return "", []
    gains = seed_gains(results)
    chosen = {(row["k"], row["family"]): row["strength"] for row in summary["table"]}
    path = os.path.join(root, "gains.csv")
    atomic_write_csv(path, gains, _GAIN_COLUMNS, "ignore")
    figures = plot_gain_curves(root, gains, prefix)
    text = ("## Across k: the gain over IWAE-k (the paper's Figure 2)\n\n"
            "Gain = IWAE-k's test -ln p(x) minus the regularized run's, same k and seed, in "
            "nats (positive: the regularizer helped); gains.csv has every grid value.\n\n"
            + markdown_claims(gain_claims(gains, chosen, validation_ties(results, chosen)))
            + "\n"
            + "".join(f"![{os.path.basename(p)}]({os.path.basename(p)})\n" for p in figures))
    return text, [path] + figures


def write_report(root, config, results, summary, header=""):
    """Write ``results.json``, ``runs.csv``, ``grid.csv``, ``table.csv``, ``report.md`` and the
    figures under ``root``; returns the list of written paths."""
    paths = {name: os.path.join(root, name) for name in
             ("results.json", "runs.csv", "grid.csv", "table.csv", "report.md")}
    atomic_write_json(paths["results.json"], {"config": config.to_dict(), "runs": results,
                                              **summary})
    atomic_write_csv(paths["runs.csv"], [_run_row(r) for r in results], _RUN_COLUMNS, "ignore")
    atomic_write_csv(paths["grid.csv"], summary["grid"], _GRID_COLUMNS, "ignore")
    atomic_write_csv(paths["table.csv"], summary["table"], _GRID_COLUMNS, "ignore")
    figures = plot_strength_curves(root, summary)
    body = [header, markdown_tables(summary, config.dataset, results)]
    if figures:
        body.append("Figures: test -ln p(x) against the regularization strength, mean ± std "
                    "over seeds, the plain model as a horizontal band:\n")
        body += [f"![{os.path.basename(p)}]({os.path.basename(p)})" for p in figures]
    gains_text, gain_paths = across_k(root, results, summary)
    if gains_text:
        body += ["", gains_text]
    atomic_write_text(paths["report.md"], "\n".join(body) + "\n")
    return list(paths.values()) + figures + gain_paths
