"""What each command prints on stdout: its summary lines and its tables, all through :mod:`._tables`.

Command modules call one ``render_*`` function with the library's result object. Column priorities
follow what a user came for: the layer, its headline number(s) and the note (verdict, or why a layer
failed or was skipped) are priority 0 and survive any width; the rest goes in order of usefulness.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ._tables import Column, Screen, Table, num

__all__ = ["render_analysis", "render_lrmap", "render_rules", "render_noise", "render_diff", "render_bench_summary",
           "render_strategies", "render_history", "render_lists", "render_demo", "noise_headline"]

_BAR = 30


def _verdict_style(warning: str, ok: bool) -> str:
    return {"over-trained": "red", "under-trained": "yellow"}.get(warning, "" if ok else "dim")


# ----------------------------------------------------------------------------- analyze


ANALYSIS_COLUMNS = (
    Column("depth", priority=3),
    Column("layer", "name"),
    Column("kind", "text", priority=5),
    Column("shape", "text", priority=6),
    Column("alpha"),
    Column("±", priority=1),
    Column("D", priority=2),
    Column("tail", priority=2),
    Column("alpha_w", priority=4),
    Column("stable_rank", priority=4, short="srank"),
    Column("log_spec", priority=5, short="lspec"),
    Column("note", "note"),
)


def analysis_table(result) -> Table:
    """One row per layer; the uncertainty column is the bootstrap interval when there is one, else sigma."""
    cols = list(ANALYSIS_COLUMNS)
    if any(r.alpha_ci for r in result.layers):
        cols[5] = Column("95% CI", priority=1)
    table = Table(cols)
    for r in result.layers:
        if r.alpha_ci:
            spread = f"[{num(r.alpha_ci[0], '.2f')}, {num(r.alpha_ci[1], '.2f')}]"
        else:
            spread = num(r.sigma, ".2f")
        note = r.warning if r.ok else f"{r.status}: {r.reason}"
        if r.ok and r.alpha_ci_warning:  # an unstable fit: the verdict must carry the caveat
            note = "; ".join(n for n in (note, r.alpha_ci_warning) if n)
        table.add(r.depth, r.name, r.kind, "x".join(map(str, r.shape)), num(r.alpha, ".2f"), spread, num(r.D, ".3f"),
                  num(r.num_pl_spikes), num(r.alpha_weighted, ".2f"), num(r.stable_rank, ".1f"),
                  num(r.log_spectral_norm, ".2f"), note, style=_verdict_style(r.warning, r.ok))
    return table


def render_analysis(result, screen: Screen | None = None) -> None:
    """Summary lines and the per-layer table."""
    screen = screen or Screen()
    s = result.summary
    count = lambda key: s.get(key, "-")  # noqa: E731
    params = s.get("num_params")
    screen.line((result.checkpoint, "bold"))
    screen.fields(f"{params:,} parameters" if isinstance(params, int) else "",
                  f"{count('num_layers')} layers ({count('num_success')} fitted, {count('num_failed')} failed, "
                  f"{count('num_skipped')} skipped)", f"{count('num_vectors')} vectors attached",
                  f"{num(s.get('seconds'), '.2f')} s")
    screen.fields(f"alpha mean {num(s.get('alpha'), '.2f')}, median {num(s.get('alpha_median'), '.2f')}",
                  f"alpha_weighted mean {num(s.get('alpha_weighted'), '.2f')}",
                  f"under-trained (alpha > 6): {count('num_under_trained')}",
                  f"over-trained (alpha < 2): {count('num_over_trained')}")
    screen.table(analysis_table(result))


# ----------------------------------------------------------------------------- prescribe


def render_rules(rules, screen: Screen | None = None) -> None:
    table = Table((Column("rule", "text"), Column("input", "text", priority=2), Column("description", "note"),
                   Column("options", "note", priority=1)))
    for info in rules:
        opts = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in info.defaults.items())
        table.add(info.name, info.inputs, info.description, opts)
    (screen or Screen()).table(table)


def lrmap_table(lrmap) -> Table:
    metric = str(lrmap.options.get("metric", "value"))
    table = Table((Column("depth", priority=1), Column("layer", "name"), Column(metric), Column("multiplier"),
                   Column("note", "note")))
    for e in lrmap.layers:
        table.add(e.depth, e.name, num(e.value), f"{e.multiplier:.3f}", e.reason, style="" if e.prescribed else "dim")
    return table


def render_lrmap(lrmap, description: str, screen: Screen | None = None) -> None:
    """The per-layer table, then the multiplier against depth as bars."""
    screen = screen or Screen()
    what = "weight-decay multiplier" if lrmap.target == "weight_decay" else "LR multiplier"
    prescribed = sum(1 for e in lrmap.layers if e.prescribed)
    screen.line((lrmap.method, "bold"), f" ({description}) on {lrmap.source or '-'}: "
                f"{len(lrmap.layers)} layers, {len(lrmap.params)} parameters; {what} per layer")
    screen.table(lrmap_table(lrmap))
    screen.line(f"{prescribed} layers prescribed, {len(lrmap.layers) - prescribed} left at the default "
                f"({lrmap.default:g})")
    profile = lrmap.by_depth()
    if not profile:
        return
    top = max(hi for _, _, _, hi, _ in profile) or 1.0
    screen.line((f"{what} by depth", "bold"), " (bar = mean, ", ("range min..max", "dim"), ")")
    for depth, mean, lo, hi, count in profile:
        bar = "█" * max(1, round(_BAR * mean / top)) if mean > 0 else ""
        spread = f" {lo:.3g}..{hi:.3g}" if hi > lo else ""
        screen.line(f"{depth:>4} {bar:<{_BAR}} {mean:.3g}", (spread, "dim"), (f"  ({count})", "dim"))


# ----------------------------------------------------------------------------- noise


def _interval(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2:
        return f"[{num(ci[0])}, {num(ci[1])}]"
    return ""


def _value(x: Any) -> float:
    try:
        out = float(x)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def reliability(record: Any) -> tuple[bool | None, str]:
    """``(reliable, reason)`` of a noise record (object or mapping); ``None`` when the file has no flag."""
    get = record.get if isinstance(record, Mapping) else (lambda k, d=None: getattr(record, k, d))
    flag, reason = get("reliable", None), get("reliable_reason", None)
    return (None if flag is None else bool(flag)), (reason if isinstance(reason, str) else "")


def noise_headline(summary: Mapping[str, Any], rounds: Any = None) -> tuple[list[str], str]:
    """The global gradient-noise numbers as ``(fields, caveat)``.

    An unbiased |G|^2 estimate at or below zero does not mean the gradient is zero: the noise
    between batches is larger than the mean gradient, so B_simple cannot be measured with this
    many batches. The caveat says so, and carries the file's own reliability flag when present.
    """
    g2 = _value(summary.get("grad_sq"))
    parts = [f"B_simple {num(summary.get('b_simple'))} {_interval(summary.get('b_simple_ci'))}".rstrip(),
             f"|G|^2 {num(summary.get('grad_sq'))} {_interval(summary.get('g2_ci'))}".rstrip(),
             f"tr(Sigma) {num(summary.get('trace_sigma'))} {_interval(summary.get('trace_sigma_ci'))}".rstrip(),
             f"SNR {num(summary.get('snr'))}"]
    caveat = ""
    batches = f" with {rounds} batches" if rounds not in (None, "", "-") else " with this many batches"
    if not math.isnan(g2) and g2 <= 0:
        caveat = (f"not measurable{batches}: the unbiased |G|^2 estimate is {num(g2)} (noise between "
                  "batches exceeds the mean gradient); measure more batches")
    reliable, reason = reliability(summary)
    if reliable is False and not caveat:
        caveat = "unreliable" + (f": {reason}" if reason else "")
    elif not caveat and summary.get("status") not in (None, "success"):
        caveat = str(summary.get("reason") or summary.get("status"))
    return parts, caveat


def noise_table(result) -> Table:
    recs = list(result.layers)
    with_ci = any(getattr(r, "b_simple_ci", None) for r in recs)
    cols = [Column("depth", priority=3), Column("layer", "name"), Column("|G|^2", priority=1),
            Column("tr(Sigma)", priority=2), Column("B_simple")]
    if with_ci:
        cols.append(Column("B_simple 95%", priority=1, short="B CI"))
    cols += [Column("SNR", priority=2), Column("||G||_F", priority=4), Column("||G||_2", priority=5),
             Column("||G||_*", priority=5), Column("note", "note")]
    table = Table(cols)
    for r in recs:
        reliable, why = reliability(r)
        if r.status != "success":
            note = f"{r.status}: {r.reason}"
        elif reliable is False:
            note = "unreliable" + (f": {why}" if why else "")
        else:
            note = ""
        cells = [r.depth, r.name, num(r.grad_sq), num(r.trace_sigma), num(r.b_simple)]
        if with_ci:
            cells.append(_interval(getattr(r, "b_simple_ci", None)) or "-")
        cells += [num(r.snr), num(r.grad_fro), num(r.grad_spectral), num(r.grad_nuclear), note]
        table.add(*cells, style="" if r.status == "success" and reliable is not False else "dim")
    return table


def render_noise(result, screen: Screen | None = None) -> None:
    """Global line and the per-layer table."""
    screen = screen or Screen()
    s, c = result.summary, result.config
    how = ("optimizer-state proxy (heuristic)" if result.source == "optimizer-proxy"
           else f"b={num(c.get('b_small'))}, B={num(c.get('b_big'))}, {num(s.get('rounds'))} rounds")
    screen.line((result.task or result.checkpoint, "bold"), f"  {how}")
    parts, caveat = noise_headline(s, s.get("rounds"))
    screen.fields("global " + parts[0], *parts[1:])
    if caveat:
        screen.line((caveat, "yellow"))
    screen.table(noise_table(result))
    try:  # what to do about it, where the library gives advice (spectra.noise.advice)
        from ..noise.advice import noise_advice
    except ImportError:
        return
    for text in noise_advice(result):
        screen.line(text)


# ----------------------------------------------------------------------------- diff


def diff_table(result) -> Table:
    table = Table((Column("depth", priority=3), Column("layer", "name"), Column("rel_update"),
                   Column("spec_ratio", priority=3, short="spec"), Column("sv_growth", priority=4, short="svg"),
                   Column("dW srank", priority=3, short="srank"), Column("dW erank", priority=4, short="erank"),
                   Column("overlap", priority=1), Column("baseline", priority=1, short="base"),
                   Column("alpha A", priority=2, short="aA"), Column("alpha B", priority=2, short="aB"),
                   Column("note", "note")))
    for r in result.layers:
        note = "" if r.status == "success" else f"{r.status}: {r.reason}"
        table.add(r.depth, r.name, num(r.rel_update), num(r.spectral_ratio), num(r.sv_growth), num(r.dw_stable_rank),
                  num(r.dw_effective_rank), num(r.subspace_overlap), num(r.overlap_baseline), num(r.alpha_a),
                  num(r.alpha_b), note, style="" if r.status == "success" else "dim")
    return table


def render_diff(result, screen: Screen | None = None) -> None:
    """Summary lines, the per-layer table, mismatches and (if any) the activation table."""
    screen = screen or Screen()
    s = result.summary
    screen.line((result.a, "bold"), " -> ", (result.b, "bold"))
    screen.fields(f"{s.get('num_layers', '-')} matrices compared", f"{s.get('num_failed', '-')} failed",
                  f"{s.get('num_mismatched', '-')} mismatched")
    screen.fields(f"global ||dW||/||W|| {num(s.get('rel_update_global'))}", f"median {num(s.get('rel_update_median'))}",
                  f"max {num(s.get('rel_update_max'))} ({s.get('rel_update_max_layer') or '-'})",
                  f"mean delta alpha {num(s.get('delta_alpha_mean'))}")
    screen.table(diff_table(result))
    for m in result.mismatched:
        screen.line(("mismatched", "yellow"), f" {m.get('param')}: {m.get('reason')}")
    if result.activations:
        act = Table((Column("depth", priority=1), Column("block", "name"), Column("alignment"),
                     Column("angle", priority=2), Column("resid energy", short="resid"),
                     Column("proj update", priority=1, short="proj"), Column("proj resid", priority=2, short="pres"),
                     Column("baseline", priority=1, short="base")), title="hidden-state update geometry (A / B)")
        for row in result.activations.get("layers") or []:
            pair = lambda k: f"{num(row.get(k + '_a'))} / {num(row.get(k + '_b'))}"  # noqa: E731
            act.add(row.get("depth"), row.get("name"), pair("alignment"), pair("angular_deviation"),
                    pair("residual_energy"), pair("projection_update"), pair("projection_residual"),
                    num(row.get("projection_baseline")))
        screen.table(act)


# ----------------------------------------------------------------------------- bench, retrain


def _pct(value: Any) -> str:
    x = _value(value)
    return "-" if math.isnan(x) else f"{100 * x:.1f}"


def render_bench_summary(result, screen: Screen | None = None) -> None:
    screen = screen or Screen()
    for task in result.config["tasks"]:
        table = Table((Column("strategy", "name"), Column("mean %"), Column("std", priority=1),
                       Column("min", priority=2), Column("max", priority=2),
                       Column(f"epochs to {_pct(result.config['target'])}%", priority=1, short="to target"),
                       Column("wall s", priority=3)),
                      title=f"{task}: final eval metric over {result.config['seeds']} seed(s)")
        rows = sorted((r for r in result.summary() if r["task"] == task), key=lambda r: -r["mean"])
        for r in rows:
            reach = f"{r['epochs_to_target']:g}" if r["epochs_to_target"] is not None else f"- ({r['reached']}/{r['n']})"
            table.add(r["strategy"], _pct(r["mean"]), _pct(r["std"]), _pct(r["min"]), _pct(r["max"]), reach,
                      num(r["wall"], ".1f"))
        screen.table(table)
        screen.blank()


def render_strategies(strategies, screen: Screen | None = None) -> None:
    table = Table((Column("name", "text"), Column("generation", "text", priority=2), Column("optimizer", "text", priority=1),
                   Column("lr map", "text", priority=3), Column("description", "note")), title="strategies")
    for s in strategies:
        table.add(s.name, s.generation, s.optimizer, s.lrmap_rule or "", s.description)
    (screen or Screen()).table(table)


def render_history(result, screen: Screen | None = None) -> None:
    table = Table((Column("epoch"), Column("train loss", priority=1), Column("eval loss", priority=1),
                   Column(f"eval {result.metric_name}"), Column("lr min", priority=2), Column("lr max", priority=2),
                   Column("time s", priority=3)), title=f"{result.task} / {result.optimizer} ({result.status})")
    for h in result.history:
        table.add(h["epoch"], num(h["train_loss"], ".4f"), num(h["eval_loss"], ".4f"), num(h["eval_metric"], ".4f"),
                  num(h["lr_min"], ".3g"), num(h["lr_max"], ".3g"), num(h["time"], ".1f"))
    (screen or Screen()).table(table)


def render_lists(screen: Screen | None = None) -> None:
    """Built-in tasks and the optimizer registry (``spectra retrain --list``)."""
    from ..optim import get_optimizer_info, list_optimizers
    from ..train import list_tasks

    screen = screen or Screen()
    table = Table((Column("name", "text"), Column("description", "note")), title="tasks")
    for info in list_tasks():
        table.add(info.name, info.description)
    screen.table(table)
    screen.blank()
    opts = Table((Column("name", "text"), Column("default lr"), Column("schedule", "text", priority=1),
                  Column("description", "note")), title="optimizers")
    for name in list_optimizers():
        info = get_optimizer_info(name)
        opts.add(name, f"{info.default_lr:g}", info.schedule, info.description)
    screen.table(opts)


# ----------------------------------------------------------------------------- demo


def render_demo(result, open_command: str, screen: Screen | None = None) -> None:
    screen = screen or Screen()
    screen.line(("spectra demo", "bold"), ": all-MiniLM-L6-v2 analysed, LR map prescribed, report written")
    for label, path in result.paths.items():
        screen.line(f"  {label:<17} {path}")
    screen.blank()
    screen.line(("Look at these first:", "bold"))
    for i, h in enumerate(result.highlights, 1):
        screen.line(f"  {i}. ", (h.title, "bold"), f": {h.detail}")
    screen.blank()
    screen.line("Open the report: ", (open_command, "bold"))
    screen.line(f"  (or {result.paths['report'].resolve().as_uri()} in a browser)")
