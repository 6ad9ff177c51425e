"""fastair reproduce: the plan, the selection on validation, the report, resumability."""
import json
import math
import os

import pytest

from fastair.cli import main
from fastair.reproduce import ReproduceConfig, plan_runs, reproduce, runner, summarize
from fastair.reproduce.report import markdown_tables

TINY = dict(seeds=2, sigmas=(0.3,), Hs=(1.0,), families=("vae", "dvae-a1", "wni"), epochs=2,
            patience=0, k_svi=4, max_steps=2, k_eval=20, chunk=10)


def test_plan_covers_every_family_grid_value_and_seed():
    config = ReproduceConfig(ks=(1, 8), seeds=2)
    runs = plan_runs(config)
    assert len(runs) == 2 * 2 * (1 + 4 + 4 + 4)
    assert len({r.name for r in runs}) == len(runs)
    assert runs[0].name == "k1/vae/seed0"
    assert [r.k for r in runs] == sorted(r.k for r in runs)
    kwargs = {r.name: r.model_kwargs() for r in runs}
    assert kwargs["k8/dvae-a0.5/sigma0.4/seed1"] == dict(k=8, sigma=0.4, alpha=0.5)
    assert kwargs["k1/wni/H2/seed0"] == dict(k=1, H=2.0)
    assert kwargs["k1/vae/seed1"] == dict(k=1)
    assert not any("wni-hidden" in r.name for r in runs)  # not one of the paper's families


def test_wni_on_the_hidden_layers_is_a_family_of_its_own(tmp_path):
    config = ReproduceConfig(**dict(TINY, seeds=1, families=("wni", "wni-hidden")))
    runs = plan_runs(config)
    assert [r.name for r in runs] == ["k1/wni/H1/seed0", "k1/wni-hidden/H1/seed0"]
    assert runs[1].model_kwargs() == dict(k=1, H=1.0, H_layers="hidden")
    summary, _ = reproduce(config, tmp_path, progress=False)
    labels = {row["label"] for row in summary["table"]}
    assert labels == {"WNI-VAE", "WNI-VAE (hidden layers)"}
    spec = json.loads((tmp_path / "k1/wni-hidden/H1/seed0/spec.json").read_text())
    assert spec["model"]["H_layers"] == "hidden" and "H_layers" not in json.loads(
        (tmp_path / "k1/wni/H1/seed0/spec.json").read_text())["model"]


@pytest.mark.parametrize("bad", [dict(ks=()), dict(ks=(0,)), dict(seeds=0), dict(sigmas=(-1,)),
                                 dict(Hs=(0.0,)), dict(k_eval=0), dict(families=("nope",)),
                                 dict(schedule="nope"), dict(eval_precision="fp8")])
def test_config_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        ReproduceConfig(**bad)


def _fake(family, strength, seed, valid, test, k=1):
    return {"name": f"{family}-{strength}-{seed}", "family": family, "k": k,
            "strength": strength, "seed": seed, "label": family,
            "valid": {"-ln p(x)": valid, "gap": 1.0, "-L(x)": valid + 1, "seconds": 1.0},
            "test": {"-ln p(x)": test, "gap": 2.0 + seed, "-L(x)": test + 2, "seconds": 1.0},
            "train_seconds": 1.0}


def test_selection_uses_validation_mean_over_seeds_not_test():
    results = [_fake("vae", None, s, 100 + s, 99) for s in range(2)]
    # sigma 0.1 has the better test number but the worse validation mean: 0.2 must win
    results += [_fake("dvae-a1", 0.1, s, 95 + 2 * s, 90) for s in range(2)]   # valid mean 96
    results += [_fake("dvae-a1", 0.2, s, 94 + 2 * s, 97 + s) for s in range(2)]  # valid mean 95
    summary = summarize(results)
    chosen = {row["family"]: row for row in summary["table"]}
    assert chosen["dvae-a1"]["strength"] == 0.2
    assert chosen["dvae-a1"]["test_nll"] == pytest.approx(97.5)
    assert chosen["dvae-a1"]["test_nll_std"] == pytest.approx(math.sqrt(0.5))
    assert chosen["vae"]["test_gap"] == pytest.approx(2.5)
    assert [row["chosen"] for row in summary["grid"]] == [True, False, True]
    text = markdown_tables(summary, "mnist5k")
    assert "97.50 ± 0.71" in text and "σ = 0.2 *" in text and "not for comparison" in text


def _flat(result):
    """A result's numbers by dotted key (approx compares flat mappings only)."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = value
    return out


def _runs_without_times(root):
    with open(os.path.join(root, "results.json")) as f:
        runs = json.load(f)["runs"]
    for r in runs:
        for key in ("train_seconds",):
            r.pop(key)
        for split in ("valid", "test"):
            r[split].pop("seconds")
    return runs


def test_reproduce_writes_the_report_and_resumes_after_an_interrupt(tmp_path, monkeypatch):
    config = ReproduceConfig(**TINY)
    straight = tmp_path / "straight"
    summary, paths = reproduce(config, straight, progress=False)
    for name in ("results.json", "runs.csv", "grid.csv", "table.csv", "report.md",
                 "fig_sigma_k1.png", "fig_H_k1.png"):
        assert os.path.getsize(straight / name) > 0, name
    assert [row["label"] for row in summary["table"]] == ["VAE", "DVAE (α=1)", "WNI-VAE"]
    assert all(row["seeds"] == 2 and math.isfinite(row["test_nll_std"])
               for row in summary["table"])
    for row in summary["table"]:  # the IW-SVI estimate lies above the amortized bound
        assert row["test_nll"] < row["test_nelbo"] and row["test_gap"] > 0
    per_example = (straight / plan_runs(config)[0].name / "test_per_example.csv").read_text()
    assert per_example.startswith("index,log_px,elbo,gap,steps,hit_cap,ess,se,")  # + new columns
    assert per_example.count("\n") == 501
    report = (straight / "report.md").read_text()
    assert "| WNI-VAE | H = 1 |" in report and "fig_H_k1.png" in report
    # mnist5k: the paper's full-MNIST row as a labelled reference, the diagnostics in the grid
    assert "paper, mnist (reference) -ln p(x)" in report and "86.93 ± 0.04" in report
    assert "not for comparison" in report and "median ESS" in report and "at cap" in report

    # interrupt during the test-set IW-SVI of the fourth run, then run again
    resumed = tmp_path / "resumed"
    real, calls = runner.iwsvi_log_likelihood, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "iwsvi_log_likelihood", flaky)
    with pytest.raises(KeyboardInterrupt):
        reproduce(config, resumed, progress=False)
    monkeypatch.setattr(runner, "iwsvi_log_likelihood", real)
    fourth = resumed / plan_runs(config)[3].name
    assert (fourth / "valid.json").exists() and not (fourth / "result.json").exists()
    assert "INCOMPLETE" in (resumed / "report.md").read_text()
    first = resumed / plan_runs(config)[0].name / "result.json"
    before = first.stat().st_mtime_ns
    reproduce(config, resumed, progress=False)
    assert first.stat().st_mtime_ns == before  # a finished run is read back, not redone
    assert _runs_without_times(resumed) == _runs_without_times(straight)


def test_reproduce_refuses_a_directory_with_other_settings(tmp_path):
    config = ReproduceConfig(**dict(TINY, seeds=1, families=("vae",)))
    reproduce(config, tmp_path, progress=False)
    for other in (dict(epochs=1), dict(patience=5), dict(epochs=3, patience=5)):
        with pytest.raises(ValueError, match="other settings"):
            reproduce(ReproduceConfig(**dict(TINY, seeds=1, families=("vae",), **other)),
                      tmp_path, progress=False)


def test_a_larger_epoch_cap_continues_the_runs_the_old_cap_stopped(tmp_path):
    """Runs capped at 2 epochs, then the same grid at 4: those the cap stopped train on from
    their checkpoints and are evaluated again, and every result equals a fresh 4-epoch grid's;
    a run that had stopped early is kept as it is."""
    short, straight = (ReproduceConfig(**dict(TINY, seeds=1, epochs=e)) for e in (2, 4))
    reproduce(straight, tmp_path / "straight", progress=False)
    reproduce(short, tmp_path / "raised", progress=False)
    first, last = (tmp_path / "raised" / spec.name for spec in plan_runs(short)[::2])
    early = json.loads((last / "result.json").read_text())
    (last / "result.json").write_text(json.dumps(dict(early, stop_reason="early_stopping")))
    kept = (last / "result.json").stat().st_mtime_ns
    reproduce(straight, tmp_path / "raised", progress=False)
    assert (last / "result.json").stat().st_mtime_ns == kept
    assert json.loads((first / "result.json").read_text())["epochs"] == 4
    assert json.loads((first / "spec.json").read_text())["train"]["epochs"] == 4
    runs = {r["name"]: r for r in _runs_without_times(tmp_path / "raised")}
    fresh = {r["name"]: r for r in _runs_without_times(tmp_path / "straight")}
    assert runs[last.relative_to(tmp_path / "raised").as_posix()]["epochs"] == 2
    for name in runs:  # equal up to float32 sums blocked by another stack (test_stack.py);
        if runs[name]["epochs"] == 4:  # an ESS of these tiny models amplifies them
            got, want = _flat(runs[name]), _flat(fresh[name])
            ess = [key for key in want if "ess" in key]
            assert ess and {k: got.pop(k) for k in ess} == pytest.approx(
                {k: want.pop(k) for k in ess}, rel=1e-3), name
            # abs: the amortization gap is a difference of two ELBOs of ~150 nats that nearly
            # cancel (~0.01 nat on these tiny models), so their float32 rounding shows in it
            assert got == pytest.approx(want, rel=1e-5, abs=1e-5, nan_ok=True), name
    assert sum(r["epochs"] == 4 for r in runs.values()) == len(runs) - 1


def test_cli_reproduce_prints_the_table(tmp_path, capsys):
    code = main(["reproduce", "--quick", "--models", "vae", "wni", "--Hs", "2", "--epochs", "1",
                 "--max-steps", "1", "--k-eval", "10", "--out", str(tmp_path), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "| VAE | – |" in out and "| WNI-VAE | H = 2 |" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["config"]["quick"] and saved["config"]["k_eval"] == 10
    assert len(saved["runs"]) == 2


def test_paper_numbers_transcription_and_the_comparison_columns():
    from fastair.reproduce.paper import PAPER, paper_numbers, paper_reference
    from fastair.reproduce.report import markdown_tables

    assert len(PAPER) == 9 and all(len(rows) == 4 for rows in PAPER.values())
    # a few cells, read off the paper's Tables 1-3
    assert tuple(PAPER[("mnist", 1)]["VAE"]) == (86.93, 0.04, 8.54, 0.14, 95.48, 0.07)
    assert PAPER[("omniglot", 1)]["WNI-VAE"].nbound == 120.55
    assert PAPER[("caltech101", 8)]["DIWAE (α=1)"].gap_std == 0.35
    assert PAPER[("mnist", 64)]["DIWAE (α=0.5)"].nll == 85.55
    assert PAPER[("caltech101", 64)]["WNI-IWAE"][4:] == (122.57, 0.10)
    # the paper's Delta_inf is -L(x) - (-ln p(x)) to rounding (0.01), except Caltech DIWAE
    # (alpha=1) at k = 64, which is printed 0.03 off: a check on typos in the transcription
    off = [(key, label) for key, rows in PAPER.items() for label, r in rows.items()
           if abs(r.nbound - r.nll - r.gap) > 0.011]
    assert off == [(("caltech101", 64), "DIWAE (α=1)")]
    assert paper_numbers("mnist5k", 1) == {} and paper_reference("mnist5k", 1)[0] == "mnist"
    row = {"k": 1, "family": "vae", "strength": None, "label": "VAE", "seeds": 2,
           "test_nll": 87.43, "test_nll_std": 0.1, "test_gap": 9.0, "test_gap_std": 0.1,
           "test_nelbo": 96.43, "test_nelbo_std": 0.1}
    text = markdown_tables({"table": [row], "grid": []}, "mnist")
    assert "| paper -ln p(x) | Δ |" in text and "86.93 ± 0.04 | +0.50 |" in text


def test_a_run_saved_before_a_setting_existed_still_resumes(tmp_path):
    """spec.json written before TrainConfig had ``precision``: its default fills the gap."""
    config = ReproduceConfig(**dict(TINY, seeds=1, families=("vae",), epochs=1))
    reproduce(config, tmp_path, progress=False)
    spec = tmp_path / plan_runs(config)[0].name / "spec.json"
    doc = json.loads(spec.read_text())
    del doc["train"]["precision"]
    spec.write_text(json.dumps(doc))
    reproduce(config, tmp_path, progress=False)  # not "other settings"
    with pytest.raises(ValueError, match="other settings"):
        reproduce(ReproduceConfig(**dict(TINY, seeds=1, families=("vae",), epochs=1,
                                         precision="bf16")), tmp_path, progress=False)


def test_a_stacked_grid_gives_the_results_of_one_run_at_a_time(tmp_path):
    config = ReproduceConfig(**dict(TINY, seeds=1))
    reproduce(config, tmp_path / "stacked", progress=False)
    reproduce(ReproduceConfig(**dict(TINY, seeds=1, stack=False)), tmp_path / "alone",
              progress=False)
    stacked, alone = _runs_without_times(tmp_path / "stacked"), _runs_without_times(
        tmp_path / "alone")
    assert [r["name"] for r in stacked] == [r["name"] for r in alone]
    assert len(stacked) == 3
    for s, a in zip(stacked, alone):
        assert (s["best_epoch"], s["epochs"]) == (a["best_epoch"], a["epochs"])
        for key in ("train_bound", "valid_bound"):
            assert s[key] == pytest.approx(a[key], rel=1e-6), (s["name"], key)
        assert s["test"]["-ln p(x)"] == pytest.approx(a["test"]["-ln p(x)"], rel=1e-4)
    # the two may continue each other's runs: stack is not part of a run's identity
    reproduce(ReproduceConfig(**dict(TINY, seeds=1, stack=False)), tmp_path / "stacked",
              progress=False)


def test_cli_no_stack_reaches_the_config(monkeypatch, tmp_path):
    import fastair.reproduce as rep
    seen = {}

    def fake(config, root, progress=True):
        seen["stack"], seen["schedule"] = config.stack, config.train_config(0).schedule
        return {"table": [], "grid": []}, []

    monkeypatch.setattr(rep, "reproduce", fake)
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--no-stack"]) == 0
    assert seen == {"stack": False, "schedule": "constant"}
    assert main(["reproduce", "--quick", "--out", str(tmp_path), "--schedule", "iwae"]) == 0
    assert seen == {"stack": True, "schedule": "iwae"}


def test_the_schedule_is_part_of_a_runs_identity_and_of_the_report(tmp_path):
    from fastair.reproduce import report_header
    from fastair.reproduce.runner import check_spec, spec_doc

    spec = plan_runs(ReproduceConfig(**TINY))[0]
    check_spec(str(tmp_path), spec_doc(spec, ReproduceConfig(**TINY)))
    with pytest.raises(ValueError, match="other settings"):
        check_spec(str(tmp_path), spec_doc(spec, ReproduceConfig(**TINY, schedule="iwae")))
    iwae = ReproduceConfig(**TINY, schedule="iwae")
    assert "(iwae schedule)" in report_header(iwae, [], 0.0, True)
    assert "schedule" not in report_header(ReproduceConfig(**TINY), [], 0.0, True)


def test_eval_precision_reaches_the_evaluator_resolved_and_is_part_of_a_runs_identity(
        tmp_path, monkeypatch):
    import fastair.reproduce as rep
    from fastair.reproduce.runner import check_spec, spec_doc

    assert ReproduceConfig(**TINY).evaluator()["precision"] == "fp32"
    ev = ReproduceConfig(**TINY, eval_precision="bf16").evaluator()
    assert (ev["precision"], ev["fit_precision"]) == ("bf16", "bf16")
    monkeypatch.setattr("fastair.evaluation.iwsvi.native_bf16", lambda device: False)
    assert ReproduceConfig(**TINY, eval_precision="auto").evaluator()["precision"] == "fp32"
    spec = plan_runs(ReproduceConfig(**TINY))[0]
    check_spec(str(tmp_path), spec_doc(spec, ReproduceConfig(**TINY)))
    with pytest.raises(ValueError, match="other settings"):
        check_spec(str(tmp_path), spec_doc(spec, ReproduceConfig(**TINY, eval_precision="bf16")))
    seen = {}
    monkeypatch.setattr(rep, "reproduce", lambda config, root, progress=True: (
        seen.setdefault("ev", config.evaluator()), ({"table": [], "grid": []}, []))[1])
    assert main(["reproduce", "--quick", "--out", str(tmp_path / "q"),
                 "--eval-precision", "bf16"]) == 0
    assert seen["ev"]["precision"] == "bf16"


def test_compare_precision_reads_two_reports():
    from experiments.reproduce_mnist5k_bf16_stack.compare_precision import compare
    root = os.path.join(os.path.dirname(__file__), "..", "..", "experiments", "reproduce_mnist5k")
    text = compare(root, root, "a", "b")
    assert "13 of 13 grid points within the seed spread" in text
    assert "| DVAE (α=0.5) | 0.4 | 3/3 |" in text and "+0.00" in text


def test_valid_subset_and_test_only_for_the_chosen_values(tmp_path):
    """--valid-n N chooses on the first N validation digits; --test-chosen-only runs IW-SVI on
    test for the chosen grid value of each family only, after all runs, and resumes."""
    config = ReproduceConfig(**dict(TINY, seeds=1, sigmas=(0.2, 0.5), families=("vae", "dvae-a1"),
                                    valid_n=7, test_chosen_only=True))
    summary, _ = reproduce(config, tmp_path, progress=False)
    results = {r["name"]: r for r in _runs_without_times(tmp_path)}
    assert all(r["valid"]["n"] == 7 for r in results.values())
    chosen = {row["strength"] for row in summary["grid"] if row["family"] == "dvae-a1"
              and row["chosen"]}
    assert len(chosen) == 1
    for name, r in results.items():
        tested = r["family"] == "vae" or r["strength"] in chosen
        assert r["test"].get("evaluated", True) is tested, name
        assert math.isfinite(r["test"]["-ln p(x)"]) is tested, name
        assert os.path.exists(tmp_path / name / "test.json") is tested, name
    assert all(math.isfinite(row["test_nll"]) for row in summary["table"])
    assert sum(math.isnan(row["test_nll"]) for row in summary["grid"]) == 1
    report = (tmp_path / "report.md").read_text()
    assert "the first 7 validation examples" in report and "test only for" in report
    spec = json.loads((tmp_path / "k1/vae/seed0/spec.json").read_text())
    assert spec["valid_n"] == 7
    again, _ = reproduce(config, tmp_path, progress=False)  # everything done: nothing redone
    assert [r["test_nll"] for r in again["table"]] == [r["test_nll"] for r in summary["table"]]
    with pytest.raises(ValueError, match="valid_n"):
        ReproduceConfig(valid_n=0)
