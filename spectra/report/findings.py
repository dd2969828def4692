"""What the report says first: alerts, summary cards, and the labelled facts of the noise and
update-geometry sections.

Thresholds follow HT-SR (Martin & Mahoney 2021, JMLR 22(165)): 2 <= alpha <= 6 is the well-trained
band, alpha < 2 over-trained, alpha > 6 under-trained (the ``warning`` field of the analysis).

Two claims need care:

* gradient noise: the unbiased two-batch estimate of |G|^2 (McCandlish et al. 2018, A.1) can be
  zero or negative when the noise between batches is larger than the mean gradient. That does
  not mean the gradient vanished: B_simple = tr(Sigma)/|G|^2 is *not measurable* with that many
  batches. The report says so, and shows the confidence intervals (``g2_ci``, ``trace_sigma_ci``,
  ``b_simple_ci``) and the ``reliable`` flag of newer noise files when they are there;
* update size: Karpathy's rule of thumb of ~1e-3 for ||dW||/||W|| is *per optimizer step*. A diff
  between two checkpoints compares per step only when it records how many steps separate them
  (``steps`` in its config or summary, e.g. ``spectra diff A B --steps 500``); otherwise the alert
  compares layers with each other (outliers against the median), and makes no per-step claim.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..results import Analysis, LayerResult
from .build import fmt, num

__all__ = ["Alert", "alerts", "cards", "param_count", "noise_facts", "noise_measurable", "diff_facts",
           "update_steps", "reliability", "UPDATE_REF", "FEW_SPIKES", "OUTLIER"]

#: Reference size of one optimizer step's update relative to the weights (Karpathy, makemore part 3).
UPDATE_REF = 1e-3
#: Tail sizes below this make a power-law alpha unreliable (Clauset et al. 2009 use n_tail >= 50).
FEW_SPIKES = 10
#: Without a step count, a layer whose relative update exceeds this multiple of the median is flagged.
OUTLIER = 5.0


@dataclass(frozen=True)
class Alert:
    """One line in the alerts list: ``level`` is danger, warn or info."""

    level: str
    title: str
    detail: str = ""
    layers: tuple[str, ...] = ()


def _names(recs: Iterable[LayerResult]) -> tuple[str, ...]:
    return tuple(r.name for r in recs)


def _s(n: int) -> str:
    return "s" * (n != 1)


# ----------------------------------------------------------------------------- noise and diff helpers


def reliability(record: Mapping[str, Any]) -> tuple[bool | None, str]:
    """``(reliable, reason)`` of a noise record or summary; ``None`` when the file has no flag (older files)."""
    flag, reason = record.get("reliable"), record.get("reliable_reason")
    return (None if flag is None else bool(flag)), (reason if isinstance(reason, str) else "")


def _interval(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and not any(math.isnan(num(c)) for c in ci):
        return f"{fmt(ci[0])} – {fmt(ci[1])}"
    return ""


def _rounds(noise: Mapping[str, Any]) -> Any:
    summ, cfg = noise.get("summary") or {}, noise.get("config") or {}
    return summ.get("rounds") or cfg.get("batches")


def noise_measurable(noise: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the global B_simple could be measured, and if not, a sentence that says why."""
    summ = noise.get("summary") or {}
    g2 = num(summ.get("grad_sq"))
    rounds = _rounds(noise)
    if not math.isnan(g2) and g2 <= 0:
        many = f"{fmt(rounds)} batches" if rounds is not None else "this many batches"
        return False, (f"not measurable with {many}: the unbiased |G|² estimate is {fmt(g2)}, i.e. the noise "
                       "between batches exceeds the mean gradient. Measure more batches (--batches) for a "
                       "positive estimate.")
    reliable, reason = reliability(summ)
    if reliable is False:
        return True, "unreliable" + (f": {reason}" if reason else "")
    return True, ""


def noise_facts(noise: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The noise section's header: labelled numbers with their intervals when the file has them
    (the caveat, if any, comes from :func:`noise_measurable`)."""
    summ = noise.get("summary") or {}
    measurable, why = noise_measurable(noise)
    facts = [("source", str(noise.get("source", ""))), ("task", str(noise.get("task", ""))),
             ("checkpoint", str(noise.get("checkpoint", ""))), ("batches", fmt(_rounds(noise)))]
    for key, label, ci in (("b_simple", "B_simple (critical batch)", "b_simple_ci"), ("grad_sq", "|G|²", "g2_ci"),
                           ("trace_sigma", "tr Σ (per example)", "trace_sigma_ci")):
        value = "not measurable" if key == "b_simple" and not measurable else fmt(summ.get(key))
        interval = _interval(summ.get(ci))
        facts.append((label, f"{value} (95%: {interval})" if interval else value))
    facts.append(("SNR", fmt(summ.get("snr")) if measurable else "not measurable"))
    return [(k, v) for k, v in facts if v not in ("", "–")]


def update_steps(diff: Mapping[str, Any]) -> int | None:
    """Optimizer steps between A and B when the diff records them (``steps``), else None."""
    for part in ("config", "summary"):
        value = num((diff.get(part) or {}).get("steps"))
        if not math.isnan(value) and value >= 1:
            return int(value)
    return None


#: Labels and formats of the diff summary's fields, in display order.
DIFF_FACTS = (
    ("num_layers", "matrices compared", None),
    ("num_mismatched", "not compared (shape or key mismatch)", None),
    ("num_failed", "failed", None),
    ("rel_update_global", "global relative update ‖ΔW‖_F / ‖W_A‖_F", None),
    ("rel_update_median", "median relative update", None),
    ("rel_update_max", "largest relative update", "rel_update_max_layer"),
    ("subspace_overlap_mean", "mean subspace overlap", "overlap_baseline_mean"),
    ("delta_alpha_mean", "mean Δα (α_B − α_A)", None),
)


def diff_facts(diff: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The update-geometry header: A, B, the step count and the summary numbers with labels."""
    summ = diff.get("summary") or {}
    facts = [("A", str(diff.get("a", ""))), ("B", str(diff.get("b", "")))]
    steps = update_steps(diff)
    facts.append(("steps between A and B", fmt(steps) if steps else "not recorded"))
    for key, label, extra in DIFF_FACTS:
        if key not in summ or (summ.get(key) in (0, None) and key in ("num_failed", "num_mismatched")):
            continue
        value = fmt(summ.get(key))
        if extra == "rel_update_max_layer" and summ.get(extra):
            value += f" ({summ[extra]})"
        elif extra == "overlap_baseline_mean" and not math.isnan(num(summ.get(extra))):
            value += f" (random: {fmt(summ[extra])})"
        facts.append((label, value))
    if steps:
        facts.append(("median update per step", fmt(num(summ.get("rel_update_median")) / steps)))
    return facts


# ----------------------------------------------------------------------------- alerts


def alerts(analysis: Analysis, *, noise: Mapping | None = None, diff: Mapping | None = None) -> list[Alert]:
    """The things a reader should look at first, most severe first."""
    layers = analysis.layers
    out: list[Alert] = []
    over = [r for r in layers if r.warning == "over-trained"]
    under = [r for r in layers if r.warning == "under-trained"]
    if over:
        out.append(Alert("danger", f"{len(over)} over-trained layer{_s(len(over))} (alpha < 2)",
                         "Very heavy-tailed spectra: these layers may be over-fit or carry correlation "
                         "traps; consider a lower learning rate or more regularisation.", _names(over)))
    if under:
        out.append(Alert("warn", f"{len(under)} under-trained layer{_s(len(under))} (alpha > 6)",
                         "Close to random: these layers have learned little; a higher learning rate or "
                         "more training usually helps.", _names(under)))
    traps = [r for r in layers if (r.num_traps or 0) > 0]
    if traps:
        out.append(Alert("danger", f"correlation traps in {len(traps)} layer{_s(len(traps))}",
                         "Randomised weights still show eigenvalues beyond the Marchenko-Pastur edge: "
                         "large outlier elements (Martin & Mahoney's correlation traps).", _names(traps)))
    failed = [r for r in layers if r.status == "failed"]
    for reason, recs in _group_reasons(failed).items():
        out.append(Alert("warn", f"fit failed for {len(recs)} layer{_s(len(recs))}", reason, _names(recs)))
    few = [r for r in layers if r.ok and r.num_pl_spikes is not None and r.num_pl_spikes < FEW_SPIKES]
    if few:
        out.append(Alert("info", f"alpha rests on fewer than {FEW_SPIKES} tail eigenvalues in {len(few)} "
                         f"layer{_s(len(few))}", "Treat these alphas as rough.", _names(few)))
    skipped = [r for r in layers if r.status == "skipped"]
    for reason, recs in _group_reasons(skipped).items():
        out.append(Alert("info", f"{len(recs)} tensor{_s(len(recs))} skipped", reason, _names(recs)))
    if noise is not None:
        out += _noise_alerts(noise)
    if diff is not None:
        out += _diff_alerts(diff)
    return out


def _noise_alerts(noise: Mapping) -> list[Alert]:
    out = []
    measurable, why = noise_measurable(noise)
    if not measurable:
        out.append(Alert("warn", "gradient noise scale not measurable", f"B_simple is {why}"))
    bad, reasons = [], []
    for r in noise.get("layers") or []:
        reliable, reason = reliability(r)
        if r.get("status", "success") != "success" or not num(r.get("b_simple")) > 0 or reliable is False:
            bad.append(str(r.get("name")))
            reasons.append(reason or str(r.get("reason") or ""))
    if bad:
        detail = "; ".join(sorted({x for x in reasons if x}))[:300]
        out.append(Alert("warn", f"gradient-noise estimate unreliable for {len(bad)} layer{_s(len(bad))}",
                         (detail + ". " if detail else "") + "B_simple is missing, not positive (|G|² estimate "
                         "at or below zero) or too uncertain to act on: measure more batches.", tuple(bad)))
    return out


def _diff_alerts(diff: Mapping) -> list[Alert]:
    out = []
    recs = [r for r in diff.get("layers") or [] if not math.isnan(num(r.get("rel_update")))]
    steps = update_steps(diff)
    if steps:
        big = [r for r in recs if num(r.get("rel_update")) / steps > 10 * UPDATE_REF]
        if big:
            out.append(Alert("warn", f"{len(big)} layer{_s(len(big))} moved more than {10 * UPDATE_REF:g} of "
                             "their norm per step", f"Relative update ‖W_B − W_A‖ / ‖W_A‖ divided by the {steps} "
                             "steps between A and B (a lower bound of the mean step) is well above the ~1e-3 "
                             "per-step rule of thumb.", tuple(str(r.get("name")) for r in big)))
    elif recs:
        rel = sorted(num(r.get("rel_update")) for r in recs)
        median = rel[len(rel) // 2] if len(rel) % 2 else 0.5 * (rel[len(rel) // 2 - 1] + rel[len(rel) // 2])
        big = [r for r in recs if median > 0 and num(r.get("rel_update")) > OUTLIER * median]
        if big:
            out.append(Alert("info", f"{len(big)} layer{_s(len(big))} moved far more than the rest",
                             f"Relative update above {OUTLIER:g}× the median ({fmt(median)}). The diff does not "
                             "record how many steps separate A and B, so no per-step comparison is made "
                             "(spectra diff --steps N records it).", tuple(str(r.get("name")) for r in big)))
    mism = diff.get("mismatched") or []
    if mism:
        out.append(Alert("info", f"{len(mism)} parameter{_s(len(mism))} not compared",
                         "; ".join(sorted({str(m.get('reason', '')) for m in mism}))[:300],
                         tuple(str(m.get("param")) for m in mism)))
    return out


def _group_reasons(recs: Sequence[LayerResult]) -> dict[str, list[LayerResult]]:
    groups: dict[str, list[LayerResult]] = {}
    for r in recs:
        groups.setdefault(r.reason or "no reason given", []).append(r)
    return groups


# ----------------------------------------------------------------------------- cards


def param_count(analysis: Analysis) -> int:
    """Parameters in the analysed checkpoint's weight matrices (each tensor key counted once)."""
    for key in ("num_params", "parameters", "total_params"):
        value = analysis.summary.get(key)
        if not isinstance(value, bool) and not math.isnan(num(value)):
            return int(num(value))
    seen: dict[str, int] = {}
    for r in analysis.layers:
        seen.setdefault(r.param, math.prod(r.shape) if r.shape else 0)
    return sum(seen.values())


def _mean(values: Iterable[float]) -> float:
    vals = [v for v in (num(x) for x in values) if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _median(values: Iterable[float]) -> float:
    vals = sorted(v for v in (num(x) for x in values) if not math.isnan(v))
    if not vals:
        return math.nan
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else 0.5 * (vals[mid - 1] + vals[mid])


def cards(analysis: Analysis, *, lrmap: Mapping | None = None, noise: Mapping | None = None,
          diff: Mapping | None = None) -> list[dict[str, str]]:
    """Summary cards: ``label``, ``value``, ``sub`` and a ``level`` (ok, warn, danger or '')."""
    ok = analysis.successful
    status = Counter(r.status for r in analysis.layers)
    alphas = [r.alpha for r in ok]
    inband = sum(1 for a in alphas if 2 <= num(a) <= 6)
    over = sum(1 for r in analysis.layers if r.warning == "over-trained")
    under = sum(1 for r in analysis.layers if r.warning == "under-trained")
    out = [
        {"label": "layers analysed", "value": f"{len(ok)}", "level": "",
         "sub": f"{status.get('failed', 0)} failed · {status.get('skipped', 0)} skipped"},
        {"label": "mean alpha", "value": fmt(_mean(alphas)), "level": "",
         "sub": f"median {fmt(_median(alphas))} · {inband}/{len(ok)} in 2–6"},
        {"label": "over-trained (α < 2)", "value": str(over), "level": "danger" if over else "ok", "sub": "layers"},
        {"label": "under-trained (α > 6)", "value": str(under), "level": "warn" if under else "ok", "sub": "layers"},
        {"label": "mean alpha_weighted", "value": fmt(_mean(r.alpha_weighted for r in ok)), "level": "",
         "sub": "α · log10 λ_max"},
        {"label": "mean log_norm", "value": fmt(_mean(r.log_norm for r in ok)), "level": "", "sub": "log10 ‖W‖²_F"},
        {"label": "mean stable rank", "value": fmt(_mean(r.stable_rank for r in ok)), "level": "",
         "sub": "‖W‖²_F / ‖W‖²_2"},
        {"label": "parameters", "value": _human(param_count(analysis)), "level": "", "sub": "in weight matrices"},
    ]
    if lrmap is not None:
        mults = [num(r.get("multiplier")) for r in lrmap.get("layers") or []]
        mults = [m for m in mults if not math.isnan(m)]
        rng = f"{fmt(min(mults))}–{fmt(max(mults))}×" if mults else "–"
        out.append({"label": f"LR map ({lrmap.get('method', '?')})", "value": rng, "level": "",
                    "sub": "multiplier range"})
    if noise is not None:
        summ = noise.get("summary") or {}
        measurable, _ = noise_measurable(noise)
        if measurable:
            ci = _interval(summ.get("b_simple_ci"))
            out.append({"label": "B_simple", "value": fmt(summ.get("b_simple")), "level": "",
                        "sub": f"critical batch · 95% {ci}" if ci else f"critical batch · SNR {fmt(summ.get('snr'))}"})
        else:
            out.append({"label": "B_simple", "value": "n/m", "level": "warn",
                        "sub": f"not measurable with {fmt(_rounds(noise))} batches (|G|² ≤ 0)"})
    if diff is not None:
        rel = [r.get("rel_update") for r in diff.get("layers") or []]
        steps = update_steps(diff)
        out.append({"label": "median rel. update", "value": fmt(_median(rel)), "level": "",
                    "sub": f"‖ΔW‖_F / ‖W_A‖_F over {fmt(steps)} steps" if steps else "‖ΔW‖_F / ‖W_A‖_F, A → B"})
    return out


def _human(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)
