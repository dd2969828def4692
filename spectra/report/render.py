"""Assemble the one-file HTML report: load inputs, prepare sections, render the Jinja2 template.

The page is self-contained (inline CSS, a small inline script, inline SVG charts, no network) and
safe for untrusted checkpoints, in three layers:

* every value the template prints first passes :func:`spectra._visible.visible` (the environment's
  ``finalize``), so control characters and bidi overrides in a layer name show as ``\\u202e``
  instead of reordering the text, and is then autoescaped; the only ``|safe`` values are SVG this
  package draws itself plus the bundled CSS/JS;
* the one JSON blob the script reads is made visible the same way and dumped with ``<``, ``>``,
  ``&`` and line separators escaped (:func:`safe_json`);
* the Content-Security-Policy allows no network and runs only the page's own script, named by its
  SHA-256 hash (:func:`script_hash`), so an injected ``<script>`` or ``onerror=`` attribute would
  not run even if escaping failed.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .._files import atomic_write
from .._version import __version__
from .._visible import visible
from ..errors import ConfigError, FormatError, require
from ..results import ANALYSIS_SCHEMA, Analysis, read_json
from . import build, findings, sections

__all__ = ["render_report", "write_report", "load_analysis", "load_json", "load_side", "safe_json", "script_hash"]

log = logging.getLogger(__name__)
_HERE = Path(__file__).parent


def _visible_strings(data: Any) -> Any:
    if isinstance(data, str):
        return visible(data)
    if isinstance(data, Mapping):
        return {visible(k): _visible_strings(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_visible_strings(v) for v in data]
    return data


def safe_json(data: Any) -> str:
    """JSON that is safe inside an HTML ``<script>`` element (no ``</script>``, no ``<!--``), with
    every string made :func:`~spectra._visible.visible` first.

    >>> safe_json({"name": "</script><b>"})
    '{"name": "\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e"}'
    """
    text = json.dumps(_visible_strings(data), ensure_ascii=False, allow_nan=False, default=str)
    for char, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                      ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, esc)
    return text


def script_hash(script: str) -> str:
    """The CSP source that allows exactly this inline script: ``'sha256-<base64 digest>'``."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


def _finalize(value: Any) -> Any:
    """Every value the template prints: markup this package made is kept, text is made visible."""
    from markupsafe import Markup

    if value is None or isinstance(value, (Markup, bool, int, float)):
        return value
    return visible(value)


def load_analysis(source: Any, **analyze_options: Any) -> Analysis:
    """An :class:`Analysis` from an Analysis, an analysis JSON file or a checkpoint (analysed now)."""
    if isinstance(source, Analysis):
        return source
    path = Path(source) if isinstance(source, (str, Path)) else None
    if path is not None and path.suffix.lower() == ".json" and path.is_file():
        data = read_json(path)
        schema = data.get("schema")
        if isinstance(schema, str) and schema.startswith("spectra.") and not schema.startswith("spectra.analysis/"):
            raise FormatError(f"{path}: is a {schema[:80]} file; give it with --lrmap, --noise or --diff "
                              f"(inputs are checkpoints or {ANALYSIS_SCHEMA} files)")
        return Analysis._from_file(data, path)
    from ..analysis import analyze

    return analyze(source, **analyze_options)


def _side_types() -> dict[str, type]:
    """The side inputs' result types by schema: LR map, noise, diff (imported when first needed)."""
    from ..diff import DiffResult
    from ..noise import NoiseResult
    from ..prescribe import LRMap

    return {cls.schema: cls for cls in (LRMap, NoiseResult, DiffResult)}


def load_side(source: Any, schema: str) -> Any:
    """A side input (LR map, noise, diff) as its typed result, read from a path, a dict or a result
    object; a malformed file is a :class:`FormatError` naming the field."""
    cls = _side_types().get(schema)
    if cls is None:
        raise ConfigError(f"unknown side input schema {schema!r}")
    if source is None or isinstance(source, cls):
        return source
    if isinstance(source, (str, Path)):
        return cls.from_json(source)
    if isinstance(source, Mapping):
        return cls.from_dict(source, origin=schema.split("/")[0])
    if hasattr(source, "to_dict"):  # a result-like object from other code
        return cls.from_dict(source.to_dict(), origin=type(source).__name__)
    raise ConfigError(f"cannot read a {schema} input from a {type(source).__name__}")


def load_json(source: Any, schema: str) -> dict[str, Any] | None:
    """A side input as the dict the report sections read: :func:`load_side`, then ``to_dict``."""
    result = load_side(source, schema)
    return None if result is None else result.to_dict()


def _when(stamp: str) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM UTC`` (anything else is shown as given)."""
    try:
        when = _dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return str(stamp)
    if when.tzinfo is not None:
        when = when.astimezone(_dt.timezone.utc)
    return when.strftime("%Y-%m-%d %H:%M") + (" UTC" if when.tzinfo is not None else "")


def _options(config: Mapping[str, Any]) -> list[str]:
    out = []
    for key, value in config.items():
        if value is None or value == "" or (isinstance(value, (list, tuple, dict)) and not value):
            continue
        if isinstance(value, (dict, list, tuple)):
            value = json.dumps(value, default=str)
        out.append(f"{key}={value}")
    return out


def render_report(
    analyses: Analysis | Sequence[Analysis],
    *,
    lrmap: Any = None,
    noise: Any = None,
    diff: Any = None,
    title: str | None = None,
) -> str:
    """The report as an HTML string. Several analyses (in checkpoint order) add a trajectory view;
    the last one is the one the per-layer sections describe.

    >>> from spectra.results import Analysis, LayerResult
    >>> a = Analysis(layers=(LayerResult("fc", "fc.weight", "linear", (4, 3), 1, alpha=3.0),),
    ...              summary={}, config={}, checkpoint="m.pt", created="now")
    >>> "<html" in render_report(a)
    True
    """
    jinja2 = require("jinja2", "report")
    if isinstance(analyses, Analysis):
        analyses = [analyses]
    analyses = [build.sanitize(a) for a in analyses]
    if not analyses:
        raise ConfigError("render_report needs at least one analysis")
    lrmap, noise, diff = (load_json(value, schema) for value, schema in zip((lrmap, noise, diff), _side_types()))
    main = analyses[-1]
    style = sections.Style(main)
    metric = sections.metric_section(main, style)
    traj = sections.trajectory_section(analyses, style)
    lr_sec = sections.lrmap_section(lrmap, style) if lrmap else None
    noise_sec = sections.noise_section(noise, style) if noise else None
    diff_sec = sections.diff_section(diff, style) if diff else None
    joins = {"lrmap": build.by_name(lrmap and lrmap.get("layers")), "noise": build.by_name(noise and noise.get("layers")),
             "diff": build.by_name(diff and diff.get("layers")), "trajectory": traj["joins"] if traj else {}}
    columns, rows = build.table(main, joins)
    labels: dict[str, list[str]] = {}
    for sec in (metric, traj, lr_sec, noise_sec, diff_sec):
        if sec:
            labels.update(sec["labels"])
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_HERE / "templates")), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             finalize=_finalize)
    js = (_HERE / "static" / "report.js").read_text(encoding="utf-8")
    ok = main.successful
    context = {
        "title": title or Path(main.checkpoint).name or "spectra report",
        "main": main,
        "analysed": _when(main.created),
        "analyses": analyses,
        "version": __version__,
        "generated": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "params": findings.param_count(main),
        "params_h": build.fmt(findings.param_count(main)),
        "n_layers": len(main.layers),
        "n_ok": len(ok),
        "options": _options(main.config),
        "alerts": findings.alerts(main, noise=noise, diff=diff),
        "cards": findings.cards(main, lrmap=lrmap, noise=noise, diff=diff),
        "metric": metric,
        "esd": sections.esd_section(main),
        "traj": traj,
        "lrmap": lr_sec,
        "noise": noise_sec,
        "diff": diff_sec,
        "columns": columns,
        "rows": rows,
        "kinds": build.kinds(main),
        "data_json": safe_json({"labels": labels}),
        "css": (_HERE / "static" / "report.css").read_text(encoding="utf-8"),
        "js": js,
        "script_src": script_hash(js),
    }
    return env.get_template("report.html.j2").render(**context)


def write_report(
    inputs: Any,
    out: str | Path,
    *,
    lrmap: Any = None,
    noise: Any = None,
    diff: Any = None,
    title: str | None = None,
    **analyze_options: Any,
) -> Path:
    """Render the report for ``inputs`` (checkpoints, analysis JSON files or Analysis objects) to ``out``.

    Checkpoints are analysed first with ``analyze_options``. Returns the written path.
    """
    items: Iterable[Any] = inputs if isinstance(inputs, (list, tuple)) else [inputs]
    analyses = [load_analysis(item, **analyze_options) for item in items]
    html = render_report(analyses, lrmap=lrmap, noise=noise, diff=diff, title=title)
    out = atomic_write(out, html)
    log.info("wrote %s (%.0f kB)", out, len(html.encode()) / 1024)
    return out
