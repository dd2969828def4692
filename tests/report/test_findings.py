"""Alerts, summary cards and the labelled noise/diff facts of the report."""

import pytest

from spectra.report import build, findings
from spectra.results import Analysis, LayerResult

from .factories import make_analysis, make_diff, make_lrmap, make_noise


def test_alerts_count_and_name_layers(analysis):
    alerts = findings.alerts(analysis)
    titles = [a.title for a in alerts]
    over = [r.name for r in analysis.layers if r.warning == "over-trained"]
    under = [r.name for r in analysis.layers if r.warning == "under-trained"]
    assert alerts[0].level == "danger" and alerts[0].layers == tuple(over)
    assert f"{len(under)} under-trained layers (alpha > 6)" in titles
    failed = next(a for a in alerts if a.title.startswith("fit failed"))
    assert failed.detail == "too few eigenvalues for a fit" and failed.layers == ("encoder.layer.0.odd",)
    skipped = next(a for a in alerts if "skipped" in a.title)
    assert skipped.level == "info" and "int64" in skipped.detail


def test_alerts_for_traps_noise_and_diff(analysis):
    trapped = Analysis(layers=(LayerResult("fc", "fc.weight", "linear", (4, 4), 1, alpha=3.0, num_traps=2),),
                       summary={}, config={}, checkpoint="x", created="")
    assert findings.alerts(trapped)[0].title == "correlation traps in 1 layer"
    noise, diff = make_noise(analysis), make_diff(analysis)
    alerts = findings.alerts(analysis, noise=noise, diff=diff)
    unreliable = next(a for a in alerts if a.title.startswith("gradient-noise"))
    assert unreliable.layers == ("bad.layer",)
    big = next(a for a in alerts if "moved far more than the rest" in a.title)
    rel = sorted(r["rel_update"] for r in diff["layers"])
    median = (rel[len(rel) // 2] + rel[(len(rel) - 1) // 2]) / 2
    assert list(big.layers) == [r["name"] for r in diff["layers"] if r["rel_update"] > 5 * median]
    assert "per step" not in big.title and "no per-step comparison" in big.detail
    assert any(a.layers == ("extra.weight",) for a in alerts)


def test_no_alerts_for_a_healthy_model():
    ok = Analysis(layers=(LayerResult("fc", "fc.weight", "linear", (4, 4), 1, alpha=3.0, num_pl_spikes=50),),
                  summary={}, config={}, checkpoint="x", created="")
    assert findings.alerts(ok) == []


def test_param_count_prefers_summary_and_counts_each_tensor_once():
    rec = LayerResult("e", "moe.experts", "expert", (2, 3, 4), 1)
    a = Analysis(layers=(rec, LayerResult("e1", "moe.experts", "expert", (2, 3, 4), 1)), summary={},
                 config={}, checkpoint="x", created="")
    assert findings.param_count(a) == 24
    b = Analysis(layers=(rec,), summary={"num_params": 1000}, config={}, checkpoint="x", created="")
    assert findings.param_count(b) == 1000


def test_cards_values(analysis):
    cards = {c["label"]: c for c in findings.cards(analysis, lrmap=make_lrmap(analysis), noise=make_noise(analysis))}
    ok = analysis.successful
    assert cards["layers analysed"]["value"] == str(len(ok))
    assert cards["layers analysed"]["sub"] == "1 failed · 1 skipped"
    assert cards["mean alpha"]["value"] == build.fmt(sum(r.alpha for r in ok) / len(ok))
    assert cards["over-trained (α < 2)"]["level"] == "danger"
    assert cards["B_simple"]["value"] == "123"
    assert cards["LR map (tempbalance)"]["value"].endswith("×")


def test_large_update_alert_compares_per_step_when_steps_are_known(analysis):
    diff = make_diff(analysis)
    diff["config"] = {"steps": 1}
    alerts = findings.alerts(analysis, diff=diff)
    big = next(a for a in alerts if "per step" in a.title)
    assert big.layers and list(big.layers) == [r["name"] for r in diff["layers"] if r["rel_update"] > 1e-2]
    assert not any("far more than the rest" in a.title for a in alerts)
    diff["config"] = {"steps": 1000}  # the same total update spread over many steps is small per step
    assert not any("per step" in a.title for a in findings.alerts(analysis, diff=diff))
    assert findings.update_steps(diff) == 1000 and findings.update_steps(make_diff(analysis)) is None


def test_noise_not_measurable_is_said_so(analysis):
    noise = make_noise(analysis)
    noise["summary"].update(grad_sq=-0.345, b_simple=None, snr=None, rounds=8)
    measurable, why = findings.noise_measurable(noise)
    assert not measurable and "not measurable with 8 batches" in why and "-0.345" in why
    card = next(c for c in findings.cards(analysis, noise=noise) if c["label"] == "B_simple")
    assert card["value"] == "n/m" and "not measurable with 8 batches" in card["sub"]
    facts = dict(findings.noise_facts(noise))
    assert facts["B_simple (critical batch)"] == "not measurable" and facts["SNR"] == "not measurable"
    assert any(a.title == "gradient noise scale not measurable" for a in findings.alerts(analysis, noise=noise))


def test_noise_intervals_and_reliability_are_shown_when_present(analysis):
    noise = make_noise(analysis)
    noise["summary"].update(b_simple_ci=[100.0, 150.0], g2_ci=[0.005, 0.02], trace_sigma_ci=None, reliable=True)
    facts = dict(findings.noise_facts(noise))
    assert facts["B_simple (critical batch)"] == "123 (95%: 100 – 150)"
    assert facts["|G|²"] == "0.01 (95%: 0.005 – 0.02)" and facts["tr Σ (per example)"] == "1.23"
    noise["layers"][0].update(reliable=False, reliable_reason="interval spans 0")
    bad = next(a for a in findings.alerts(analysis, noise=noise) if a.title.startswith("gradient-noise"))
    assert noise["layers"][0]["name"] in bad.layers and "interval spans 0" in bad.detail
    old = make_noise(analysis)  # files without the new fields still render their numbers
    assert dict(findings.noise_facts(old))["B_simple (critical batch)"] == "123"


def test_diff_facts_have_labels_not_json_keys():
    diff = make_diff(make_analysis())
    diff["summary"] = {"num_layers": 19, "num_failed": 0, "num_mismatched": 1, "rel_update_global": 0.012,
                       "rel_update_median": 0.01, "rel_update_max": 0.3, "rel_update_max_layer": "pooler.dense",
                       "subspace_overlap_mean": 0.4, "overlap_baseline_mean": 0.05, "delta_alpha_mean": -0.1}
    facts = dict(findings.diff_facts(diff))
    assert not set(facts) & {k for k in diff["summary"]} and not any(k.upper() in facts for k in diff["summary"])
    assert facts["largest relative update"] == "0.3 (pooler.dense)"
    assert facts["mean subspace overlap"] == "0.4 (random: 0.05)"
    assert facts["steps between A and B"] == "not recorded" and "failed" not in facts
