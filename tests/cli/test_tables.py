"""The terminal table mechanism: fitting to the width, names shortened from the left, numbers and
notes never lost, and every checkpoint-derived string made visible (no markup, escapes or bidi)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from safetensors.torch import save_file
from typer.testing import CliRunner

from spectra._visible import UNSAFE_CHARS
from spectra.cli import app
from spectra.cli._tables import Column, Screen, Table, layout, render_lines, render_rows, shorten_left, wrap_note
from spectra.cli._views import analysis_table, render_analysis
from spectra.results import Analysis, LayerResult

runner = CliRunner()


def _screen(width: int | None) -> tuple[Screen, io.StringIO]:
    buf = io.StringIO()
    console = Console(file=buf, width=width or 10_000, color_system=None, emoji=False, highlight=False)
    return Screen(console, width, detect=False), buf


def minilm_names() -> list[str]:
    """The layer names of the bundled all-MiniLM-L6-v2 (read from its safetensors header)."""
    from spectra.demo import minilm_path
    from spectra.io import open_checkpoint

    with open_checkpoint(minilm_path()) as ckpt:
        return [k[: -len(".weight")] for k in ckpt.keys() if k.endswith(".weight") and len(ckpt.info(k).shape) == 2]


LLAMA = [f"model.layers.{i}.{part}" for i in (0, 9, 31) for part in
         ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
          "mlp.up_proj", "mlp.down_proj")] + ["model.embed_tokens", "lm_head"]


def make_analysis(names: list[str]) -> Analysis:
    """Records with every kind of note: over/under-trained, a failed fit, a skipped tensor."""
    layers = []
    for i, name in enumerate(names):
        alpha = [1.234567, 3.5, 7.891234, 12.3456][i % 4]
        warning = "over-trained" if alpha < 2 else "under-trained" if alpha > 6 else ""
        if i % 7 == 5:
            layers.append(LayerResult(name=name, param=name + ".weight", kind="linear", shape=(4096, 11008), depth=i,
                                      status="failed", reason="no power-law tail: fewer than 2 eigenvalues above xmin"))
        elif i % 7 == 6:
            layers.append(LayerResult(name=name, param=name + ".weight", kind="skipped", shape=(1, 512), depth=i,
                                      status="skipped", reason="non-floating dtype int64 (buffers and quantized "
                                      "weights are not analyzed)"))
        else:
            layers.append(LayerResult(name=name, param=name + ".weight", kind="linear", shape=(4096, 11008), depth=i,
                                      alpha=alpha, sigma=0.123, D=0.0456, num_pl_spikes=1234, alpha_weighted=12.345,
                                      stable_rank=123.4, log_spectral_norm=2.345, warning=warning,
                                      alpha_ci=(alpha - 0.25, alpha + 0.5) if i % 3 == 0 else None))
    summary = {"num_params": 6_738_415_616, "num_layers": len(names), "num_success": 1, "num_failed": 1,
               "num_skipped": 1, "num_vectors": 65, "seconds": 1.0, "alpha": 4.0, "alpha_median": 3.5,
               "alpha_weighted": 5.0, "num_under_trained": 2, "num_over_trained": 1}
    return Analysis(layers=tuple(layers), summary=summary, config={}, checkpoint="model.safetensors", created="")


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("family", ["minilm", "llama"])
def test_fixed_widths_keep_numbers_and_notes(width, family):
    names = minilm_names() if family == "minilm" else LLAMA
    analysis = make_analysis(names)
    table = analysis_table(analysis)
    lay = layout(table.columns, [c for c, _ in table.rows], width)
    assert lay.width <= width
    screen, buf = _screen(width)
    render_analysis(analysis, screen)
    out = buf.getvalue()
    lines = out.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    shown = [table.columns[i].header for i in lay.keep]
    assert {"layer", "alpha", "note"} <= set(shown)
    header, rows = render_rows(table, width)
    assert "\n".join([header] + [line for row in rows for line in row]) in out  # what Screen printed
    for r, row in zip(analysis.layers, rows):
        text = " ".join(" ".join(line.split()) for line in row)
        name = text.split()[shown.index("layer")]  # columns before it hold one word each
        assert r.name.endswith(name.lstrip("…")), (r.name, name)  # shortened from the left only
        if r.ok:
            assert f"{r.alpha:.2f}" in text  # the number, whole
        note = r.warning if r.ok else f"{r.status}: {r.reason}"
        if note:
            assert note in text, (note, text)  # the note, whole (wrapped lines joined)


def test_names_shortened_from_the_left_keep_the_tail():
    assert shorten_left("encoder.layer.5.attention.self.value", 30) == "…layer.5.attention.self.value"
    assert shorten_left("model.layers.31.mlp.down_proj", 16) == "…mlp.down_proj"
    assert shorten_left("short", 10) == "short"
    cut = shorten_left("x" * 50, 10)
    assert cut == "…" + "x" * 9


def test_notes_wrap_without_losing_words():
    text = "skipped: non-floating dtype int64 (buffers and quantized weights are not analyzed)"
    lines = wrap_note(text, 20)
    assert all(len(line) <= 20 for line in lines) and " ".join(lines) == text
    assert "".join(wrap_note("a" * 45, 10)) == "a" * 45


def test_secondary_columns_go_first_and_essentials_stay():
    cols = (Column("layer", "name"), Column("alpha"), Column("extra", priority=2), Column("more", priority=1),
            Column("note", "note"))
    rows = [["encoder.layer.11.attention.output.dense", "3.1415926", "1234567", "7654321", "under-trained"]]
    wide = layout(cols, rows, None)
    assert wide.keep == (0, 1, 2, 3, 4)
    narrow = layout(cols, rows, 66)
    assert narrow.keep == (0, 1, 3, 4)  # priority 2 dropped before priority 1
    tiny = layout(cols, rows, 20)
    assert tiny.keep == (0, 1, 4)  # never the essentials, even when they do not fit


def test_no_terminal_prints_full_values():
    analysis = make_analysis(LLAMA)
    screen, buf = _screen(None)
    render_analysis(analysis, screen)
    out = buf.getvalue()
    assert "…" not in out
    for r in analysis.layers:
        assert r.name in out
    assert "stable_rank" in out and "log_spec" in out  # every column


def test_pipe_output_from_the_cli_is_unshortened(tmp_path, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    path = _llama_checkpoint(tmp_path)
    res = runner.invoke(app, ["analyze", str(path)])
    assert res.exit_code == 0, res.output
    assert "model.layers.0.self_attn.q_proj" in res.stdout and "…" not in res.stdout


def _llama_checkpoint(tmp_path, extra: dict | None = None):
    gen = torch.Generator().manual_seed(0)
    sd = {f"model.layers.{i}.self_attn.{p}.weight": torch.randn(48, 48, generator=gen)
          for i in range(2) for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    sd["lm_head.weight"] = torch.randn(40, 48, generator=gen)  # keeps the "model." prefix in the names
    sd.update(extra or {})
    path = tmp_path / "llama.safetensors"
    save_file(sd, str(path))
    return path


@pytest.mark.parametrize("width", [80, 120])
def test_cli_fits_columns(tmp_path, monkeypatch, width):
    """``COLUMNS`` fixes the width; no line is longer and every alpha of the JSON shows in full."""
    monkeypatch.setenv("COLUMNS", str(width))
    path = _llama_checkpoint(tmp_path)
    out = tmp_path / "a.json"
    res = runner.invoke(app, ["analyze", str(path), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert all(len(line) <= width for line in res.stdout.splitlines())
    for rec in json.loads(out.read_text())["layers"]:
        assert f"{rec['alpha']:.2f}" in res.stdout


HOSTILE = ["[/].weight", "[bold red]x[/]", "\x1b]0;pwned\x07", "\x1b[2J\x1b[H", "a\rb\nc", "\x9b31m", "\u202eevil",
           "\u2066iso\u2069", "\u200f\u061c", ":thumbs_up:", "\ud800"]


def test_hostile_keys_through_the_cli(tmp_path):
    """Keys with markup, escape sequences, C1 controls and bidi overrides are shown as visible text."""
    extra = {f"{k}.weight": torch.randn(16, 16) for k in HOSTILE if "\ud800" not in k}
    path = _llama_checkpoint(tmp_path, extra)
    res = runner.invoke(app, ["analyze", str(path)])
    assert res.exit_code == 0, res.output
    assert not UNSAFE_CHARS.search(res.stdout.replace("\n", ""))
    assert "[/]" in res.stdout and "\\x1b]0;pwned\\x07" in res.stdout and "\\u202eevil" in res.stdout
    assert ":thumbs_up:" in res.stdout and "👍" not in res.stdout


def test_error_lines_show_hostile_text_visibly():
    res = runner.invoke(app, ["analyze", "/no/such/\x1b]0;t\x07\u202e\nfile.safetensors"])
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not UNSAFE_CHARS.search(res.stderr.rstrip("\n")) and "\\x1b" in res.stderr and "\\u202e" in res.stderr


@settings(max_examples=150, deadline=None)
@given(names=st.lists(st.text(min_size=0, max_size=60), min_size=1, max_size=6),
       width=st.one_of(st.none(), st.integers(min_value=1, max_value=200)))
def test_arbitrary_keys_render_safely(names, width):
    """For any text in any cell and any width: no control, bidi or separator character reaches the
    terminal, nothing raises, and every number cell is printed whole."""
    table = Table((Column("depth", priority=1), Column("layer", "name"), Column("alpha"), Column("note", "note")))
    for i, name in enumerate(names):
        table.add(i, name, f"{i + 0.123456:.6f}", name)
    screen, buf = _screen(width)
    screen.line((names[0], "bold"), " summary ", names[-1])
    screen.table(table)
    out = buf.getvalue()
    assert not UNSAFE_CHARS.search(out.replace("\n", ""))
    for i in range(len(names)):
        assert f"{i + 0.123456:.6f}" in out
    lines = render_lines(table, width)
    assert len(lines) >= 1 + len(names)


def test_header_abbreviations_used_only_when_tight():
    cols = (Column("layer", "name"), Column("stable_rank", short="srank"))
    rows = [["fc", "1.5"]]
    assert layout(cols, rows, 100).headers == ("layer", "stable_rank")
    assert layout(cols, rows, 12).headers == ("layer", "srank")


def _lrmap(names):
    from spectra.prescribe.lrmap import LayerEntry, LRMap

    layers = tuple(LayerEntry(name=n, param=n + ".weight", depth=i, metric="alpha", value=2.0 + i / 7,
                              multiplier=0.5 + i / 37, reason="" if i % 5 else "excluded: first or last layer (as TempBalance)",
                              prescribed=bool(i % 5)) for i, n in enumerate(names))
    return LRMap(method="tempbalance", params={e.param: e.multiplier for e in layers}, layers=layers,
                 options={"metric": "alpha"}, source="analysis.json")


def _noise(names):
    from spectra.noise.result import LayerNoise, NoiseResult

    layers = tuple(LayerNoise(name=n, params=(n + ".weight",), depth=i, numel=4096 * 4096, grad_sq=1.234e-5 * (i + 1),
                              trace_sigma=0.0123456, b_simple=1234.5678 / (i + 1), snr=8.1e-4, grad_fro=0.0123,
                              grad_spectral=0.00456, grad_nuclear=0.789,
                              status="success" if i % 4 else "failed",
                              reason="" if i % 4 else "|G|^2 estimate not positive: not measurable with 8 batches")
                   for i, n in enumerate(names))
    summary = {"b_simple": 345.6, "grad_sq": 1e-4, "trace_sigma": 0.0345, "snr": 2.9e-3, "status": "success",
               "rounds": 8}
    return NoiseResult(layers=layers, summary=summary, config={"b_small": 8, "b_big": 32}, source="gradients",
                       task="synthetic")


def _diff(names):
    from spectra.diff import DiffResult, LayerDiff

    layers = tuple(LayerDiff(name=n, param=n + ".weight", depth=i, kind="linear", shape=(4096, 4096),
                             rel_update=1.2345e-3 * (i + 1), spectral_ratio=0.0234, sv_growth=0.00123,
                             dw_stable_rank=12.34, dw_effective_rank=123.4, subspace_overlap=0.2345,
                             overlap_baseline=0.00244, alpha_a=3.456, alpha_b=3.567,
                             status="success" if i % 6 else "failed", reason="" if i % 6 else "shape mismatch in A")
                   for i, n in enumerate(names))
    summary = {"num_layers": len(names), "num_failed": 1, "num_mismatched": 0, "rel_update_global": 0.0123,
               "rel_update_median": 0.0101, "rel_update_max": 0.0456, "rel_update_max_layer": names[-1],
               "delta_alpha_mean": 0.111}
    return DiffResult(layers=layers, by_depth=(), summary=summary, config={}, a="a.safetensors", b="b.safetensors")


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("view", ["lrmap", "noise", "diff"])
def test_other_commands_keep_numbers_and_notes(view, width):
    """prescribe, noise and diff tables at 80 and 120 columns: numbers whole, notes whole, lines fit."""
    from spectra.cli import _views

    names = LLAMA
    result = {"lrmap": _lrmap, "noise": _noise, "diff": _diff}[view](names)
    table = {"lrmap": _views.lrmap_table, "noise": _views.noise_table, "diff": _views.diff_table}[view](result)
    header, rows = render_rows(table, width)
    lay = layout(table.columns, [c for c, _ in table.rows], width)
    shown = [table.columns[i] for i in lay.keep]
    assert all(len(line) <= width for row in rows for line in [header, *row])
    for (cells, _), row in zip(table.rows, rows):
        text = " ".join(" ".join(line.split()) for line in row)
        for col, i in zip(shown, lay.keep):
            if col.role == "number":
                assert cells[i] in text.split(), (col.header, cells[i], text)
        note = cells[len(table.columns) - 1]
        assert note in text
    screen, buf = _screen(width)
    {"lrmap": lambda: _views.render_lrmap(result, "TempBalance", screen), "noise": lambda: _views.render_noise(result, screen),
     "diff": lambda: _views.render_diff(result, screen)}[view]()
    assert all(len(line) <= width for line in buf.getvalue().splitlines())


def test_progress_labels_are_visible_and_fit():
    from spectra.cli._console import _label

    console = Console(width=80)
    label = _label("model.layers.31.self_attn.\x1b]0;x\x07q_proj\u202e.bias", console)
    assert not UNSAFE_CHARS.search(label) and label.endswith("\\u202e.bias") and len(label) <= 80 - 62


def test_noise_headline_says_when_b_simple_is_not_measurable():
    from spectra.cli._views import noise_headline

    parts, caveat = noise_headline({"grad_sq": -0.345, "b_simple": None, "trace_sigma": 1.2, "snr": None}, 8)
    assert parts[0] == "B_simple -" and "not measurable with 8 batches" in caveat and "-0.345" in caveat
    parts, caveat = noise_headline({"grad_sq": 0.01, "b_simple": 123.0, "b_simple_ci": [90.0, 170.0],
                                    "trace_sigma": 1.23, "snr": 0.008, "reliable": False,
                                    "reliable_reason": "interval spans a factor 10"}, 8)
    assert parts[0] == "B_simple 123 [90, 170]" and caveat == "unreliable: interval spans a factor 10"


def test_unstable_interval_warning_reaches_the_note():
    """A bootstrap interval that misses its own estimate is flagged in the note, next to the verdict."""
    rec = LayerResult(name="h.0.fc", param="h.0.fc.weight", kind="linear", shape=(64, 64), depth=1, alpha=114.6,
                      warning="under-trained", alpha_ci=(6.5, 35.1),
                      alpha_ci_warning="unstable fit: the interval excludes its own estimate")
    analysis = Analysis(layers=(rec,), summary={}, config={}, checkpoint="x", created="")
    screen, buf = _screen(80)
    screen.table(analysis_table(analysis))
    out = " ".join(buf.getvalue().split())
    assert "under-trained; unstable fit" in out
