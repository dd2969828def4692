"""Markdown rendering of the analyze-vs-WeightWatcher results (split from the runner script).

Pure formatting: takes the ``CaseResult`` records that ``analyze_vs_weightwatcher.py`` measured and
returns the text of ``reports/bench/analyze.md``.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from _machine import describe

if TYPE_CHECKING:  # the runner defines these; imported lazily to avoid a cycle
    from analyze_vs_weightwatcher import CaseResult


def setting_label(setting: str) -> str:
    """How a thread setting reads in the report: ``default`` or a thread count."""
    if setting == "default":
        return f"library defaults ({os.cpu_count()} threads here)"
    return f"{setting} thread(s) (OMP/MKL/OPENBLAS_NUM_THREADS={setting})"


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "**FAIL**")


def case_section(res: CaseResult) -> str:
    c = res.case
    lines = [f"### {c.title}; threads: {setting_label(res.setting)}", "",
             f"Input: {res.size_mib:.0f} MiB of safetensors; {c.repeats} run(s) per tool, tools alternating.", "",
             "| tool | analysis s (best) | analysis s (median) | whole process s (best) | CPU s (best) "
             "| peak RSS MiB | VmHWM MiB | RSS before analysis MiB | layers fitted / rows |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for tool in c.tools:
        first = res.runs[tool][0]
        before = first.hwm_before_analysis_kib
        lines.append(
            f"| {tool} | {_fmt(res.best(tool, 'analysis_s'))} | {_fmt(res.median(tool, 'analysis_s'))} "
            f"| {_fmt(res.best(tool, 'wall_s'))} | {_fmt(res.best(tool, 'cpu_s'))} | {res.peak_mib(tool):.0f} "
            f"| {res.hwm_mib(tool):.0f} | {'n/a' if before is None else f'{before / 1024:.0f}'} "
            f"| {len(first.alphas)} / {first.rows} |")
    if res.has_both():
        n, dmax, rmax, worst, only = res.alpha_delta()
        ratio = res.best("weightwatcher", "analysis_s") / res.best("spectra", "analysis_s")
        whole = res.best("weightwatcher", "wall_s") / res.best("spectra", "wall_s")
        cpu = res.best("weightwatcher", "cpu_s") / res.best("spectra", "cpu_s")
        rss = res.peak_mib("weightwatcher") / res.peak_mib("spectra")
        lines += ["",
                  f"WeightWatcher / spectra: analysis time **{ratio:.2f}x**, whole process {whole:.2f}x, "
                  f"CPU time {cpu:.2f}x, peak RSS {rss:.2f}x.  ",
                  f"Alphas compared on {n} layers fitted by both: max |delta alpha| = {dmax:.3g}, "
                  f"max relative delta = {rmax:.3g}" + (f" (at `{worst}`)" if worst else "") + ".  ",
                  f"Fitted by one tool only: {', '.join(f'`{k}`' for k in only) if only else 'none'}."]
    return "\n".join(lines)


def targets(all_results: list[CaseResult], rel_tol: float) -> list[tuple[str, str, bool | None]]:
    rows: list[tuple[str, str, bool | None]] = []
    compared = [r for r in all_results if r.has_both()]
    if compared:
        worst = max((r.alpha_delta()[2], r.case.key) for r in compared)
        rows.append((f"alphas equal to {rel_tol:g} relative (every layer both tools fitted, all inputs)",
                     f"max relative delta {worst[0]:.3g} ({worst[1]})", worst[0] <= rel_tol))
    for res in all_results:
        if res.case.speedup and res.has_both():
            ratio = res.best("weightwatcher", "analysis_s") / res.best("spectra", "analysis_s")
            rows.append((f">= {res.case.speedup:g}x faster than WeightWatcher's analyze: {res.case.title}; "
                         f"threads: {res.setting}",
                         f"{ratio:.2f}x (analysis call, best of {res.case.repeats})", ratio >= res.case.speedup))
    one, eight = _memory_pair(all_results)
    if one and eight:
        for tool in one.case.tools:
            a, b = one.peak_mib(tool), eight.peak_mib(tool)
            label = "peak RSS independent of checkpoint size (1 vs 8 blocks within 10%)"
            if tool != "spectra":
                label += " [informative, not the target]"
            rows.append((f"{tool}: {label}", f"{a:.0f} MiB vs {b:.0f} MiB ({b / a:.3f}x)",
                         abs(b / a - 1) <= 0.10 if tool == "spectra" else None))
    return rows


def _memory_pair(all_results: list[CaseResult]) -> tuple[CaseResult | None, CaseResult | None]:
    by_key = {r.case.key: r for r in all_results}
    return by_key.get("rss-1024x1"), by_key.get("rss-1024x8")


def memory_section(all_results: list[CaseResult]) -> str:
    one, eight = _memory_pair(all_results)
    if not (one and eight):
        return ""
    lines = ["## Peak RSS versus checkpoint size", "",
             f"Same layer shapes, {one.size_mib:.0f} MiB (1 block) versus {eight.size_mib:.0f} MiB (8 blocks). "
             "Peak RSS is the child's `ru_maxrss`; it counts anonymous memory (the process's own allocations) "
             "and file-backed pages (mmap'ed checkpoint bytes, clean page cache the kernel may drop). The "
             "split is sampled from /proc/self/status every 20 ms during the analysis call.", "",
             f"Each tool ran {one.case.repeats} time(s) per checkpoint; the peak is the largest of the runs "
             "(the range over runs is in brackets). spectra runs with the allocator policy its CLI applies "
             "(`spectra._memory.limit_heap_growth`: glibc's mmap threshold pinned at 1 MiB); "
             "`spectra-default-malloc` is the same analysis without it (informative: it shows the heap "
             "growth that policy removes).", "",
             "| tool | peak RSS, 1 block MiB | peak RSS, 8 blocks MiB | ratio | peak RssAnon 1 / 8 blocks MiB "
             "| anon ratio | peak RssFile 1 / 8 blocks MiB |", "|---|---:|---:|---:|---:|---:|---:|"]

    def span(res: CaseResult, tool: str) -> str:
        peaks = [r.peak_kib / 1024 for r in res.runs[tool]]
        return f"{max(peaks):.0f} [{min(peaks):.0f}-{max(peaks):.0f}]" if len(peaks) > 1 else f"{peaks[0]:.0f}"

    def peak(res: CaseResult, tool: str, key: str) -> float:
        return max(r.sampled_peaks.get(key, 0) for r in res.runs[tool]) / 1024

    for tool in one.case.tools:
        a, b = one.peak_mib(tool), eight.peak_mib(tool)
        anon1, anon8 = peak(one, tool, "RssAnon"), peak(eight, tool, "RssAnon")
        file1, file8 = peak(one, tool, "RssFile"), peak(eight, tool, "RssFile")
        anon_ratio = anon8 / anon1 if anon1 else math.nan
        lines.append(f"| {tool} | {span(one, tool)} | {span(eight, tool)} | {b / a:.3f} | {anon1:.0f} / {anon8:.0f} | "
                     f"{_fmt(anon_ratio, 3)} | {file1:.0f} / {file8:.0f} |")
    a, b = one.peak_mib("spectra"), eight.peak_mib("spectra")
    grew_anon = peak(eight, "spectra", "RssAnon") - peak(one, "spectra", "RssAnon")
    grew_file = peak(eight, "spectra", "RssFile") - peak(one, "spectra", "RssFile")
    if abs(b / a - 1) > 0.10:
        where = "file-backed" if grew_file > grew_anon else "anonymous"
        lines += ["", f"spectra's peak grew by {b - a:.0f} MiB; peak RssFile grew by {grew_file:.0f} MiB and "
                  f"peak RssAnon by {grew_anon:.0f} MiB, so the growth is mostly {where} memory."
                  + (" Every tensor read through `safetensors.safe_open` stays mapped (and counted as resident) "
                     "until the handle closes, so RssFile climbs towards the file size." if where == "file-backed"
                     else " Compare the `spectra-default-malloc` row (the same analysis without the CLI's pinned "
                     "mmap threshold) to see how much of it is allocator behaviour rather than held memory.")]
    return "\n".join(lines)


def render(results: list[CaseResult], meta: dict[str, str], rel_tol: float) -> str:
    parts = ["# spectra analyze versus WeightWatcher 0.7.7", "",
             "Written by `benchmarks/analyze_vs_weightwatcher.py`. Each number is one tool on one input in a "
             "fresh Python process; *analysis* times the `analyze` call alone, *whole process* is the child's "
             "wall time from spawn to exit (interpreter start, imports, reading, analysis), *CPU* its user + "
             "system time, *peak RSS* its `ru_maxrss` (cross-checked against the child's own VmHWM read from "
             "/proc right after the analysis call). Speed ratios use each tool's best run. WeightWatcher "
             "runs with its default options (scipy float64 SVD on a CPU); spectra with its defaults (float64 "
             "Gram matrix + `eigvalsh`, WeightWatcher's xmin search).", "",
             "## Targets", "", "| target | measured | result |", "|---|---|---|"]
    for label, measured, ok in targets(results, rel_tol):
        parts.append(f"| {label} | {measured} | {_verdict(ok)} |")
    parts += ["", "## Per input", ""]
    for res in results:
        parts += [case_section(res), ""]
    mem = memory_section(results)
    if mem:
        parts += [mem, ""]
    parts += ["## Run", "",
              f"- Command: `{meta['command']}`",
              f"- Started {meta['start']}, finished {meta['end']} ({meta['minutes']} min)",
              f"- Thread settings: {meta['threads']}. With the library defaults both tools' BLAS/OpenMP "
              "pools spin on every core, and on a shared machine a single busy core can slow either tool "
              "4-10x from one run to the next; one thread per tool gives repeatable ratios.",
              f"- Code: {meta['git']}",
              f"- Load average (1/5/15 min) at start: {meta['load_start']}; at end: {meta['load_end']}. "
              "Other engineers' test runs share this machine; a load above the core count inflates wall "
              "times for both tools (CPU seconds are less affected).",
              "", "## Machine", "", describe(), ""]
    return "\n".join(parts)


# --------------------------------------------------------------------------- main
