"""Strategy benchmark library: aggregation against hand-computed numbers, claim verdicts, LR maps."""

from __future__ import annotations

import math

import pytest

from spectra.errors import ConfigError
from spectra.train.bench import (STRATEGIES, BenchResult, BenchRun, initial_lrmap, paper_comparison, render_markdown,
                                 run_strategies)


def fake(rows, tasks=("synthetic",), regime=None):
    """BenchResult from (task, strategy, seed, final, epochs_to) tuples; curves ramp to the final value."""
    runs = tuple(BenchRun(t, s, seed, f, f, e, 1.0, "complete", (0.1, f)) for t, s, seed, f, e in rows)
    names = list(dict.fromkeys(r.strategy for r in runs))
    regime = regime or {t: "from scratch" for t in tasks}
    meta = {t: {"regime": regime[t], "description": t, "classes": 4, "lr": {n: 0.05 for n in names}} for t in tasks}
    return BenchResult(runs, {"tasks": list(tasks), "strategies": names, "seeds": 3, "epochs": 1, "target": 0.9,
                              "task_meta": meta, "machine": "test", "total_time": 0.0, "created": "now", "device": "cpu"})


def test_summary_mean_std_and_epochs_to_target():
    result = fake([("synthetic", "sgd", 0, 0.90, 2), ("synthetic", "sgd", 1, 0.94, 4), ("synthetic", "sgd", 2, 0.92, 3),
                   ("synthetic", "adam", 0, 0.95, 1), ("synthetic", "adam", 1, 0.85, None), ("synthetic", "adam", 2, math.nan, None)])
    sgd, adam = result.summary()
    assert sgd["mean"] == pytest.approx(0.92) and sgd["std"] == pytest.approx(0.02)  # sample std of .90 .94 .92
    assert (sgd["min"], sgd["max"], sgd["epochs_to_target"], sgd["reached"]) == (0.90, 0.94, 3, 3)
    # a NaN final (diverged) counts as 0; epochs-to-target only when every seed got there
    assert adam["mean"] == pytest.approx((0.95 + 0.85 + 0.0) / 3)
    assert adam["epochs_to_target"] is None and adam["reached"] == 1


def test_claims_agree_when_dals_wins_and_stlr_collapses():
    rows = []
    for seed in range(3):
        rows += [("synthetic", "dals", seed, 0.98, 2), ("synthetic", "dals-fast", seed, 0.95, 3),
                 ("synthetic", "stlr", seed, 0.44, None), ("synthetic", "radam", seed, 0.97, 2)]
    lines = paper_comparison(fake(rows))
    assert "rank 1 of 4, 0.0 points behind the best" in lines[0] and lines[0].endswith("We agree.")
    assert "3, 3, 3. We agree." in lines[1]
    assert "STLR 44.0% vs RAdam 97.0%; we agree: STLR+discriminative collapses" in lines[2]


def test_claims_disagree_when_numbers_say_so():
    rows = []
    for seed in range(3):
        rows += [("synthetic", "dals", seed, 0.80 + 0.001 * seed, None), ("synthetic", "sgd", seed, 0.95, 2),
                 ("synthetic", "dals-fast", seed, 0.95, 5), ("synthetic", "stlr", seed, 0.96, 2),
                 ("synthetic", "radam", seed, 0.90, 4)]
    lines = paper_comparison(fake(rows))
    assert "rank 5 of 5" in lines[0] and lines[0].endswith("We disagree.")
    assert lines[1].endswith("We disagree.")
    assert "not worse than RAdam" in lines[2]
    text = render_markdown(fake(rows))
    assert "| G1 fixed | sgd | 0.05 | 95.0% +/- 0.0% |" in text and "not reached (0/3 seeds did)" in text


def test_fine_tuning_claim_uses_ranks():
    rows = [("ft", name, 0, acc, None) for name, acc in
            [("radam", 0.97), ("lookahead", 0.96), ("adam", 0.95), ("sgd", 0.5), ("dals", 0.4), ("lars", 0.3)]]
    lines = paper_comparison(fake(rows, tasks=("ft",), regime={"ft": "fine-tuning"}))
    # 6 strategies: thirds of 3 (max(3, 6 // 3)), so top = radam, lookahead, adam and bottom = sgd, dals, lars
    assert ("dals rank 5 (bottom third: agrees); sgd rank 4 (bottom third: agrees); radam rank 1 (top third: agrees); "
            "lookahead rank 2 (top third: agrees).") in lines[0]


def test_dals_fast_partial_and_chance_level_runs_are_reported():
    rows = [("synthetic", "dals-fast", 0, 0.95, 2), ("synthetic", "dals-fast", 1, 0.95, 5),
            ("synthetic", "sgd", 0, 0.30, None), ("synthetic", "sgd", 1, 0.95, 2)]
    lines = paper_comparison(fake(rows))
    assert lines[0].endswith("2, 5. We partly agree (1 of 2 seeds).")
    # 4 classes: chance-level threshold 1.5 / 4 = 0.375, so sgd seed 0 (0.30) is flagged
    assert lines[-1] == ("**Runs that ended at chance level** on synthetic (final accuracy below 1.5 / 4 classes): "
                         "sgd (seeds 0).")


def test_initial_lrmap_is_mean_one_and_reproducible():
    args = {"n_train": 64, "n_eval": 64, "width": 64, "depth": 3}
    a = initial_lrmap("synthetic", 0, "llr", task_args=args)
    b = initial_lrmap("synthetic", 0, "llr", task_args=args)
    assert dict(a.params) == dict(b.params)
    prescribed = [entry.multiplier for entry in a.layers if entry.prescribed]
    assert len(prescribed) >= 2 and sum(prescribed) / len(prescribed) == pytest.approx(1.0)


def test_grid_runs_and_rejects_unknown_strategy():
    args = {"synthetic": {"n_train": 64, "n_eval": 64, "width": 8, "depth": 1}}
    result = run_strategies(["synthetic"], ["sgd"], seeds=1, epochs=1, device="cpu", task_args=args)
    assert [(r.task, r.strategy, r.seed, len(r.curve)) for r in result.runs] == [("synthetic", "sgd", 0, 2)]
    assert result.config["task_meta"]["synthetic"]["lr"] == {"sgd": 0.05}
    with pytest.raises(ConfigError, match="unknown strategy"):
        run_strategies(["synthetic"], ["nope"], seeds=1, epochs=1)
    assert {"sgd", "stlr", "radam", "lars", "lamb", "grokfast", "lookahead", "dals", "dals-fast", "dals+llr"} <= set(STRATEGIES)
