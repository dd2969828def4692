"""``spectra prescribe``: a layerwise learning-rate (or weight-decay) map from spectral metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ._app import (DeviceOpt, QuietOpt, TrustPickleOpt, check_outputs, command, emit, is_stdout, parse_pairs,
                   progress_callback)
from ._views import render_lrmap, render_rules


@command("prescribe")
def prescribe_cmd(
    source: Annotated[Optional[str], typer.Argument(help="An analysis JSON (spectra analyze -o), or a checkpoint to analyze first. Not needed with --noise/--diff rules.")] = None,
    method: Annotated[Optional[str], typer.Option("--method", "-m", help="Rule name (see --list): llr, tempbalance, tb-sqrt, tb-log2, alphadecay, layer-decay, ulmfit, lines, noise, update-ratio.")] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the rules with one-line descriptions and exit.")] = False,
    metric: Annotated[Optional[str], typer.Option("--metric", help="Per-layer metric the rule reads (alpha, alpha_weighted, stable_rank, ...; b_simple/snr for noise; rel_update for update-ratio).")] = None,
    min_ratio: Annotated[Optional[float], typer.Option("--min-ratio", help="Low end of a linear map (llr 1, tempbalance 0.5, alphadecay 0.666).")] = None,
    max_ratio: Annotated[Optional[float], typer.Option("--max-ratio", help="High end of a linear map (llr 5, tempbalance 1.5, alphadecay 3).")] = None,
    normalize: Annotated[str, typer.Option("--normalize", help="none, mean or geomean: divide the multipliers by their mean over layers.")] = "none",
    clip: Annotated[Optional[str], typer.Option("--clip", help="LO,HI bounds for the multipliers, e.g. 0.5,2.")] = None,
    norms: Annotated[Optional[str], typer.Option("--norms", help="Norms next to a layer: follow (take its multiplier), base (stay at 1) or name (only a BatchNorm named like its conv follows, TempBalance's rule); a layer's own bias always follows (default: the rule's).")] = None,
    noise: Annotated[Optional[Path], typer.Option("--noise", help="Gradient-noise file (spectra noise -o) for --method noise.")] = None,
    diff: Annotated[Optional[Path], typer.Option("--diff", help="Checkpoint diff file (spectra diff -o) for --method update-ratio.")] = None,
    set_: Annotated[Optional[List[str]], typer.Option("--set", "-s", metavar="KEY=VALUE", help="Rule option KEY=VALUE (repeatable), e.g. decay=0.65, exclude_first=false, eigs_thresh=0.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the map (spectra.lrmap/1 JSON); '-' writes it to stdout.")] = None,
    fit: Annotated[Optional[str], typer.Option("--fit", help="Power-law fit when analysing a checkpoint (default: median for HT-SR rules, as the anchors).")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="Eigen-solver precision when analysing a checkpoint (default: float32 SVD for HT-SR rules, as their reference code; float64 otherwise).")] = None,
    device: DeviceOpt = "auto",
    trust_pickle: TrustPickleOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Turn per-layer metrics into LR multipliers: lr_layer = base_lr * multiplier.

    Example: spectra prescribe analysis.json --method tempbalance -o lrmap.json
    """
    from ..errors import ConfigError
    from ..prescribe import get_rule, list_rules, prescribe

    if list_:
        render_rules(list_rules())
        return
    if method is None:
        raise ConfigError("choose a rule with --method NAME (`spectra prescribe --list` shows them)")
    options = parse_pairs(set_, "--set")
    options.update({k: v for k, v in (("min_ratio", min_ratio), ("max_ratio", max_ratio)) if v is not None})
    to_stdout = is_stdout(out)
    check_outputs({"--out": (out, (".json",))}, inputs=[source, noise, diff])
    analyze_options = {"dtype": dtype, "device": device, "trust_pickle": trust_pickle}
    if fit is not None:
        analyze_options["fit"] = fit
    with progress_callback("analyze", quiet=quiet or to_stdout) as on_progress:
        analyze_options["progress"] = on_progress
        lrmap = prescribe(source, method, metric=metric, normalize=normalize, clip=clip, norms=norms,
                          noise=noise, diff=diff, analyze_options=analyze_options, **options)
    emit(lrmap, out, quiet=quiet, render=lambda m: render_lrmap(m, get_rule(method).description))

