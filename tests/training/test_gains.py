"""Figure 2's numbers: gains over IWAE-k paired by seed, the two claims' verdicts, the figure and
the report section, and experiments/figure2_mnist5k/figure2.py merging records."""
import csv
import json
import math
import os

import pytest

from fastair.reproduce import summarize
from fastair.reproduce.gains import gain_claims, markdown_claims, seed_gains, stronger_first
from fastair.reproduce.report import across_k


def _run(family, k, strength, seed, test, valid=None):
    return {"name": f"k{k}/{family}/{strength}/seed{seed}", "family": family, "k": k,
            "label": family, "strength": strength, "seed": seed,
            "valid": {"-ln p(x)": test if valid is None else valid, "gap": 1.0, "-L(x)": 0.0},
            "test": {"-ln p(x)": test, "gap": 1.0, "-L(x)": 0.0}}


def _grid(base, effect, sigmas=(0.2, 0.8), seeds=(0, 1)):
    """Runs of a VAE and DVAE(α=1) whose test value is base[k] + seed - effect[k][sigma]."""
    runs = []
    for k in base:
        for s in seeds:
            runs.append(_run("vae", k, None, s, base[k] + s))
            for sigma in sigmas:
                # a seed-dependent wiggle of +-0.1 so the paired spread is not zero
                runs.append(_run("dvae-a1", k, sigma, s,
                                 base[k] + s - effect[k][sigma] + 0.1 * (-1) ** s,
                                 valid=base[k] - effect[k][sigma]))
    return runs


def test_gains_are_paired_by_seed_and_skip_missing_baselines():
    runs = _grid({1: 100.0, 8: 90.0}, {1: {0.2: 1.0, 0.8: -3.0}, 8: {0.2: 1.5, 0.8: -1.0}})
    runs.append(_run("dvae-a1", 8, 0.2, 5, 80.0))  # seed 5 has no IWAE-8 run: left out
    runs.append(_run("dvae-a1", 1, 0.4, 0, math.nan))  # not tested: left out
    gains = {(g["k"], g["strength"]): g for g in seed_gains(runs)}
    assert set(gains) == {(1, 0.2), (1, 0.8), (8, 0.2), (8, 0.8)}
    g = gains[(8, 0.2)]
    # the seeds' own offsets (+s in both) cancel; only the +-0.1 wiggle is left
    assert g["seed_gains"] == {0: pytest.approx(1.4), 1: pytest.approx(1.6)}
    assert g["gain"] == pytest.approx(1.5) and g["n"] == 2
    assert g["gain_std"] == pytest.approx(math.sqrt(0.02))
    assert g["gain_se"] == pytest.approx(0.1)


def test_stronger_first_orders_each_knob():
    assert stronger_first("dvae-a1", [0.1, 0.8, 0.4]) == [0.8, 0.4, 0.1]
    assert stronger_first("wni", [4.0, 0.5, 1.0]) == [0.5, 1.0, 4.0]


def test_claims_hold_when_the_data_say_so_and_fail_otherwise():
    holds = _grid({1: 100.0, 8: 90.0, 64: 85.0},
                  {1: {0.2: 1.0, 0.8: -3.0}, 8: {0.2: 0.5, 0.8: -1.0}, 64: {0.2: 0.2, 0.8: 0.5}})
    gains = seed_gains(holds)
    chosen = {(1, "dvae-a1"): 0.2, (8, "dvae-a1"): 0.2, (64, "dvae-a1"): 0.8}
    c = gain_claims(gains, chosen)["dvae-a1"]
    assert c["strongest"] == 0.8 and c["robust"] == "grows" and c["best_grows"] == "grows"
    assert [round(g, 6) for _, g, _ in c["strongest_gain"]] == [-3.0, -1.0, 0.5]
    k1, k2, diff, se = c["pairs"][0]
    assert (k1, k2) == (1, 8) and diff == pytest.approx(2.0)
    assert se == pytest.approx(math.sqrt(0.02))
    text = markdown_claims(gain_claims(gains, chosen))
    assert "| holds |" in text and "σ = 0.8" in text

    fails = _grid({1: 100.0, 8: 90.0}, {1: {0.2: 1.0, 0.8: -1.0}, 8: {0.2: 1.0, 0.8: -3.0}})
    chosen = {(1, "dvae-a1"): 0.8, (8, "dvae-a1"): 0.2}
    c = gain_claims(seed_gains(fails), chosen)["dvae-a1"]
    assert c["robust"] == "falls" and c["best_grows"] == "falls"
    flat = gain_claims(seed_gains(fails), {(1, "dvae-a1"): 0.2, (8, "dvae-a1"): 0.2})
    assert flat["dvae-a1"]["best_grows"] == "flat"


def test_a_difference_within_two_standard_errors_is_called_noise():
    runs = _grid({1: 100.0, 8: 90.0}, {1: {0.2: 1.0, 0.8: -1.0}, 8: {0.2: 1.0, 0.8: -0.9}})
    text = markdown_claims(gain_claims(seed_gains(runs), {}))
    assert "(noise)" in text and "within noise" in text


def test_the_report_section_and_figures_need_two_k(tmp_path):
    one_k = _grid({1: 100.0}, {1: {0.2: 1.0, 0.8: -3.0}})
    assert across_k(str(tmp_path), one_k, summarize(one_k)) == ("", [])
    runs = _grid({1: 100.0, 8: 90.0}, {1: {0.2: 1.0, 0.8: -3.0}, 8: {0.2: 1.5, 0.8: -1.0}})
    text, paths = across_k(str(tmp_path), runs, summarize(runs))
    assert "Figure 2" in text and "Claim 1" in text and "Claim 2" in text
    with open(tmp_path / "gains.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and {r["k"] for r in rows} == {"1", "8"}
    pytest.importorskip("matplotlib")
    assert os.path.exists(tmp_path / "fig2_dvae-a1.png")
    assert str(tmp_path / "fig2_dvae-a1.png") in paths


def _record(path, dataset, runs):
    os.makedirs(path, exist_ok=True)
    config = {"dataset": dataset, "ks": sorted({r["k"] for r in runs}), "seeds": 2,
              "epochs": 10, "patience": 3, "k_svi": 4, "max_steps": 5, "k_eval": 8,
              "precision": "fp32"}
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump({"config": config, "runs": runs}, f)


def test_figure2_script_merges_records_and_refuses_mixtures(tmp_path):
    from experiments.figure2_mnist5k.figure2 import load, main
    runs = _grid({1: 100.0, 8: 90.0}, {1: {0.2: 1.0, 0.8: -3.0}, 8: {0.2: 1.5, 0.8: -1.0}})
    _record(tmp_path / "a", "toy", [r for r in runs if r["k"] == 1])
    _record(tmp_path / "b", "toy", [r for r in runs if r["k"] == 8])
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "figure2.md").read_text()
    assert "# Figure 2 on toy" in text and "at most 10 epochs" in text and "Claim 2" in text
    _record(tmp_path / "c", "other", [r for r in runs if r["k"] == 8])
    with pytest.raises(ValueError, match="several data sets"):
        load([str(tmp_path / "a"), str(tmp_path / "c")])
    with pytest.raises(ValueError, match="k = 8 is in both"):
        load([str(tmp_path / "b"), str(tmp_path / "c")])


def test_row_norms_script_reads_trained_runs(tmp_path, tiny_data):
    from experiments.wni_exam_mnist5k.row_norms import main as row_norms
    from fastair import cli
    tiny = ["--hidden", "8", "--z-dim", "2", "--batch-size", "40", "--no-progress", "--epochs",
            "1"]
    assert cli.main(["train", "--run-dir", str(tmp_path / "vae"), *tiny]) == 0
    assert cli.main(["train", "--model", "wni-vae", "--H", "0.05", "--run-dir",
                     str(tmp_path / "wni"), *tiny]) == 0
    assert row_norms([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "row_norms.md").read_text()
    assert "| vae | – | – | trunk.0 | 8 | 1 |" in text
    # H = 0.05 is far below a fresh layer's rows: every row of every layer is held at the cap
    assert "| wni | 0.05 | all | trunk.0 | 8 | 1 | 0.05 | 0.05 | 0.05 | 100% |" in text
    assert "| wni | 0.05 | all | logvar | 2 | 1 |" in text


def test_the_grid_table_gives_each_value_its_paired_gain():
    from fastair.reproduce.report import markdown_tables
    runs = _grid({1: 100.0}, {1: {0.2: 1.0, 0.8: -3.0}})
    text = markdown_tables(summarize(runs), "mnist5k", runs)
    assert "gain, paired" in text
    assert "| σ = 0.2 * |" in text and "+1.00 ± 0.10 |" in text and "-3.00 ± 0.10 |" in text
    assert "gain, paired" in markdown_tables(summarize(runs), "mnist5k")  # "–" without runs


def test_paired_gains_script_writes_beside_the_record(tmp_path):
    from experiments.reproduce_mnist5k_bf16_stack.paired_gains import main as paired
    runs = _grid({1: 100.0}, {1: {0.2: 1.0, 0.8: -3.0}})
    _record(tmp_path, "toy", runs)
    assert paired([str(tmp_path)]) == 0
    text = (tmp_path / "paired_gains.md").read_text()
    assert "| 1 | dvae-a1 | 0.2 | +1.00 ± 0.10 | 0: +0.90, 1: +1.10 |" in text
    assert (tmp_path / "paired_gains.csv").read_text().startswith("k,label,family,strength")


def test_a_choice_within_two_standard_errors_on_validation_is_a_tie():
    from fastair.reproduce.gains import validation_ties
    runs = _grid({1: 100.0, 8: 90.0}, {1: {0.2: 1.0, 0.8: -3.0}, 8: {0.2: 0.5, 0.8: 1.0}})
    chosen = {(1, "dvae-a1"): 0.2, (8, "dvae-a1"): 0.8}
    firm = validation_ties(runs, chosen)
    assert firm == {(1, "dvae-a1"): [], (8, "dvae-a1"): []}
    c = gain_claims(seed_gains(runs), chosen, firm)["dvae-a1"]
    assert c["best_grows"] == "grows" and c["unsure"] == []
    assert "| holds |" in markdown_claims({"dvae-a1": c})
    # k = 8's validation: 0.8 beats 0.2 by 0.5 on average, by -0.5 and +1.5 seed by seed
    for r in runs:
        if r["k"] == 8 and r["strength"] == 0.2:
            r["valid"]["-ln p(x)"] += (-1.0 if r["seed"] == 0 else 1.0)
    ties = validation_ties(runs, chosen)
    assert ties == {(1, "dvae-a1"): [], (8, "dvae-a1"): [0.2]}
    c = gain_claims(seed_gains(runs), chosen, ties)["dvae-a1"]
    assert c["unsure"] == [(1, 8)]
    text = markdown_claims({"dvae-a1": c})
    assert "σ = 0.8 (tied: 0.2)" in text and "holds in the choices; 8 vs 1 within noise" in text
    # one seed: nothing can be called a tie
    single = [r for r in runs if r["seed"] == 0]
    assert validation_ties(single, chosen) == {(1, "dvae-a1"): [], (8, "dvae-a1"): []}
