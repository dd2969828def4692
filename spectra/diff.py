"""``spectra diff``: how every layer moved between two checkpoints, streamed one tensor pair at a time.

Per weight matrix (conv kernels viewed as (out, in*k*k), expert stacks one matrix per expert) the
update dW = W_B - W_A is summarised by :func:`spectra.core.geometry.update_geometry`: relative update
||dW||_F/||W_A||_F, spectral ratio, top singular value growth, stable, effective and numerical rank of
dW, and how much of dW's top singular subspace (at most its rank) lies in W_A's top-k subspace, against
its exact random baseline. The change
in the HT-SR exponent alpha uses the same eigenvalue convention as ``spectra analyze``. Keys only in
one file or with different shapes are listed under ``mismatched``; they never stop the run. Biases
and norm weights are listed under ``vectors`` with their relative update and the layer they attach to.
Records follow A's model order (:func:`spectra.structure.describe`); buffers of either checkpoint (a
causal mask, BatchNorm statistics) are ``skipped`` with the reason ``buffer`` and stay out of every
summary.

With ``activations_task`` the hidden-state update of every transformer block is decomposed into a
tokenwise part and a residual for both checkpoints (our reading of Yoo 2026; see
:mod:`spectra.core.geometry`).
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import torch

from ._version import __version__
from .core.geometry import activation_geometry, update_geometry
from .errors import ConfigError
from .layers import assign_depths, attach_vectors, classify, matrices
from .records import NAN, Record, ResultFile, checked

__all__ = ["DIFF_SCHEMA", "LayerDiff", "DiffResult", "diff", "activation_diff", "find_blocks"]

log = logging.getLogger(__name__)
DIFF_SCHEMA = "spectra.diff/1"
#: Per-depth means reported in ``by_depth``.
DEPTH_METRICS = ("rel_update", "spectral_ratio", "sv_growth", "dw_stable_rank", "dw_effective_rank",
                 "subspace_overlap", "overlap_baseline", "alpha_a", "alpha_b", "delta_alpha")


@dataclass(frozen=True)
class LayerDiff(Record):
    """Update geometry of one matrix (or a tensor that was skipped, with ``status`` and ``reason``)."""

    name: str
    param: str
    depth: int = checked(ge=0)
    kind: str
    shape: tuple[int, ...] = checked((), ge=0)
    rel_update: float = NAN
    rel_update_rms: float = NAN
    spectral_ratio: float = NAN
    sv_growth: float = NAN
    dw_stable_rank: float = NAN
    dw_effective_rank: float = NAN
    subspace_overlap: float = NAN
    overlap_left: float = NAN
    overlap_right: float = NAN
    overlap_baseline: float = NAN
    topk: int | None = None
    dw_rank: int | None = checked(None, ge=0)
    dw_k: int | None = checked(None, ge=0)
    alpha_a: float = NAN
    alpha_b: float = NAN
    delta_alpha: float = NAN
    norm_a: float = NAN
    norm_dw: float = NAN
    status: str = checked("success", choices=("success", "failed", "skipped"))
    reason: str = ""


@dataclass(frozen=True)
class DiffResult(ResultFile):
    """Result of :func:`diff`; ``to_json`` writes ``spectra.diff/1``."""

    schema = DIFF_SCHEMA
    json_order = ("created", "a", "b", "config", "summary", "by_depth", "layers", "mismatched", "vectors")

    layers: tuple[LayerDiff, ...]
    by_depth: tuple[Mapping[str, Any], ...] = ()
    summary: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    a: str = ""
    b: str = ""
    mismatched: tuple[Mapping[str, str], ...] = ()
    vectors: tuple[Mapping[str, Any], ...] = ()
    activations: Mapping[str, Any] | None = checked(None, omit_none=True)
    created: str = ""
    spectra_version: str = __version__

    def layer(self, name: str) -> LayerDiff:
        for rec in self.layers:
            if rec.name == name:
                return rec
        raise KeyError(name)

    def to_frame(self):
        """Per-layer table as a pandas DataFrame (needs the ``report`` extra)."""
        from .errors import require

        pd = require("pandas", "report")
        return pd.DataFrame([dict(r.to_dict(), shape="x".join(map(str, r.shape))) for r in self.layers])


# ------------------------------------------------------------------ weight diff


def _alpha(spec, tensor: torch.Tensor, device, dtype: torch.dtype = torch.float64) -> float:
    """HT-SR alpha of one layer tensor with analyze's conventions (pooled conv, lambda = sigma^2)."""
    from .core.esd import eigenvalues
    from .core.powerlaw import fit_power_law

    (_, _, mat, scale), = matrices(spec, tensor)
    fit = fit_power_law(eigenvalues(mat, device=device, dtype=dtype) * scale)
    return fit.alpha if fit.status == "success" else NAN


def _matrix_records(spec, depth: int, ta: torch.Tensor, tb: torch.Tensor, *, topk: int, alpha: bool,
                    device, dtype: torch.dtype = torch.float64) -> list[LayerDiff]:
    """One record per matrix of a layer tensor pair (one per expert for expert stacks)."""
    if spec.kind == "expert":
        pairs = [(f"{spec.name}.{e}", ta[e], tb[e], spec.__class__(spec.key, f"{spec.name}.{e}", "linear",
                                                                       tuple(ta[e].shape), spec.dtype))
                 for e in range(ta.shape[0])]
    else:
        pairs = [(spec.name, ta, tb, spec)]
    out = []
    for name, a, b, sub in pairs:
        base = dict(name=name, param=spec.key, depth=depth, kind=spec.kind, shape=tuple(a.shape))
        a, b = a.to(device), b.to(device)
        if not (bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all())):
            out.append(LayerDiff(**base, status="failed", reason="non-finite values in a checkpoint"))
            continue
        try:
            geo = update_geometry(a, b, topk=topk, dtype=dtype)
        except (RuntimeError, ValueError) as exc:  # torch.linalg failures (SVD did not converge)
            out.append(LayerDiff(**base, status="failed", reason=f"SVD failed: {exc}"))
            continue
        alpha_a = _alpha(sub, a, device, dtype) if alpha else NAN
        alpha_b = _alpha(sub, b, device, dtype) if alpha else NAN
        kw = {f: getattr(geo, f) for f in ("rel_update", "rel_update_rms", "spectral_ratio", "sv_growth",
                                           "dw_stable_rank", "dw_effective_rank", "subspace_overlap",
                                           "overlap_left", "overlap_right", "overlap_baseline", "topk",
                                           "dw_rank", "dw_k", "norm_a", "norm_dw")}
        out.append(LayerDiff(**base, **kw, alpha_a=alpha_a, alpha_b=alpha_b, delta_alpha=alpha_b - alpha_a))
    return out


def _mean(values) -> float:
    xs = [v for v in values if v is not None and math.isfinite(v)]
    return sum(xs) / len(xs) if xs else NAN


def _by_depth(layers: Sequence[LayerDiff]) -> list[dict[str, Any]]:
    rows: dict[int, list[LayerDiff]] = {}
    for rec in layers:
        if rec.status == "success":
            rows.setdefault(rec.depth, []).append(rec)
    return [{"depth": d, "layers": len(recs), **{m: _mean(getattr(r, m) for r in recs) for m in DEPTH_METRICS},
             "rel_update_max": max(r.rel_update for r in recs)} for d, recs in sorted(rows.items())]


def _summary(layers: Sequence[LayerDiff], mismatched: Sequence[Mapping]) -> dict[str, Any]:
    ok = [r for r in layers if r.status == "success"]
    rel = [r.rel_update for r in ok if math.isfinite(r.rel_update)]
    sq_a = sum(r.norm_a ** 2 for r in ok if math.isfinite(r.norm_a))
    sq_d = sum(r.norm_dw ** 2 for r in ok if math.isfinite(r.norm_dw))
    top = max(ok, key=lambda r: r.rel_update if math.isfinite(r.rel_update) else -1.0, default=None)
    return {"num_layers": len(ok), "num_records": len(layers),
            "num_failed": sum(r.status == "failed" for r in layers), "num_mismatched": len(mismatched),
            "rel_update_global": math.sqrt(sq_d / sq_a) if sq_a > 0 else NAN,
            "rel_update_median": statistics.median(rel) if rel else NAN,
            "rel_update_max": top.rel_update if top else NAN, "rel_update_max_layer": top.name if top else None,
            **{f"{m}_mean": _mean(getattr(r, m) for r in ok)
               for m in ("spectral_ratio", "sv_growth", "dw_stable_rank", "subspace_overlap", "overlap_baseline",
                         "alpha_a", "alpha_b", "delta_alpha")}}


def diff(
    a: Any,
    b: Any,
    *,
    topk: int = 10,
    alpha: bool = True,
    device: str = "auto",
    dtype: str = "float64",
    trust_pickle: bool = False,
    activations_task: Any = None,
    max_tokens: int = 2048,
    activation_k: int = 8,
    method: str = "local",
    progress: Callable[[int, int, str], None] | None = None,
) -> DiffResult:
    """Compare checkpoints ``a`` and ``b`` (paths, state dicts or modules) layer by layer.

    Memory holds one tensor pair at a time. ``topk`` is the subspace size for the overlap; ``alpha``
    fits the power law on both sides (the slow part on big models).

    >>> import torch
    >>> w = {"fc.weight": torch.eye(4)}
    >>> r = diff(w, {"fc.weight": 2 * torch.eye(4)}, alpha=False, device="cpu")
    >>> r.layer("fc").rel_update, r.layer("fc").sv_growth
    (1.0, 1.0)
    """
    from .io import open_checkpoint
    from .noise import resolve_device
    from .structure import describe

    if int(topk) < 1:
        raise ConfigError(f"--topk must be >= 1, got {topk}")
    if activations_task is not None and (max_tokens < 1 or activation_k < 1):
        raise ConfigError(f"--max-tokens and the activation k must be >= 1, got {max_tokens} and {activation_k}")
    if dtype not in ("float64", "float32"):
        raise ConfigError(f"--dtype {dtype!r}: use float64 or float32")
    work = getattr(torch, dtype)
    dev = resolve_device(device)
    layers: list[LayerDiff] = []
    mismatched: list[dict[str, str]] = []
    vectors: list[dict[str, Any]] = []
    with open_checkpoint(a, trust_pickle=trust_pickle) as ca, open_checkpoint(b, trust_pickle=trust_pickle) as cb:
        name_a, name_b = str(ca.path), str(cb.path)
        sa, sb = describe(ca), describe(cb)
        keys_a, keys_b = list(sa.keys), list(sb.keys)
        in_b, in_a = set(keys_b), set(keys_a)
        mismatched += [{"param": k, "reason": "only in A"} for k in keys_a if k not in in_b]
        mismatched += [{"param": k, "reason": "only in B"} for k in keys_b if k not in in_a]
        specs = []
        for key in (k for k in keys_a if k in in_b):
            ia, ib = ca.info(key), cb.info(key)
            if tuple(ia.shape) != tuple(ib.shape):
                mismatched.append({"param": key, "reason": f"shape {tuple(ia.shape)} in A, {tuple(ib.shape)} in B"})
            else:
                specs.append(classify(key, ia.shape, ia.dtype, buffer=sa.is_buffer(key) or sb.is_buffer(key),
                                      module_kind=sa.module_kind(key)))
        mats = [s for s in specs if s.is_layer]
        depths = assign_depths([s.name for s in mats], [s.kind for s in mats])
        owner = attach_vectors([s.key for s in specs], [s.name for s in mats],
                               [s.key for s in specs if s.kind == "vector"])
        for done, spec in enumerate(specs):
            depth = depths.get(spec.name, depths.get(owner.get(spec.key) or "", 0))
            base = dict(name=spec.name, param=spec.key, depth=depth, kind=spec.kind, shape=spec.shape)
            if spec.kind in ("skipped", "buffer"):
                layers.append(LayerDiff(**base, status="skipped", reason=spec.reason))
            elif spec.kind == "vector":
                ta, tb = ca.get(spec.key), cb.get(spec.key)
                if not ta.is_floating_point():
                    layers.append(LayerDiff(**base, status="skipped", reason=f"non-floating dtype {spec.dtype}"))
                else:  # biases and norms: reported with the layer they are attached to
                    na = float(torch.linalg.vector_norm(ta.double()))
                    rel = float(torch.linalg.vector_norm(tb.double() - ta.double())) / na if na > 0 else NAN
                    vectors.append({"param": spec.key, "layer": owner.get(spec.key), "depth": depth,
                                    "shape": spec.shape, "rel_update": rel})
            else:
                layers.extend(_matrix_records(spec, depth, ca.get(spec.key), cb.get(spec.key), topk=topk,
                                              alpha=alpha, device=dev, dtype=work))
            if progress is not None:
                progress(done + 1, len(specs), spec.name)
    activations = None
    if activations_task is not None:
        activations = activation_diff(activations_task, a, b, device=str(dev), trust_pickle=trust_pickle,
                                      max_tokens=max_tokens, k=activation_k, method=method)
    config = {"topk": topk, "alpha": alpha, "fit": "ww" if alpha else None, "device": str(dev), "dtype": dtype,
              "order": sa.order, "order_source": sa.source,
              "overlap": "share of dW's top k_d singular directions (k_d = min(topk, rank dW)) inside W_A's top k_a "
                         "(k_a = min(topk, rank W_A)), mean of left and right sides; baseline (k_a/N + k_a/M)/2"}
    return DiffResult(tuple(layers), tuple(_by_depth(layers)), _summary(layers, mismatched), config, name_a, name_b,
                      tuple(mismatched), tuple(vectors), activations,
                      datetime.now(timezone.utc).isoformat(timespec="seconds"))


# ------------------------------------------------------------------ activation geometry


def find_blocks(model: torch.nn.Module) -> tuple[str, list[torch.nn.Module]]:
    """The transformer block stack: the longest ``ModuleList`` of same-class composite modules.

    Works for ``nn.TransformerEncoder`` (``layers``), BERT (``encoder.layer``), GPT-2
    (``transformer.h``), Llama (``model.layers``).
    """
    best: tuple[str, list[torch.nn.Module]] = ("", [])
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) >= 2:
            kids = list(mod)
            same = len({type(k) for k in kids}) == 1
            composite = all(any(True for _ in k.children()) for k in kids)
            if same and composite and len(kids) > len(best[1]):
                best = (name, kids)
    if not best[1]:
        raise ConfigError(f"{type(model).__name__}: no stack of transformer blocks (a ModuleList of repeated "
                          "blocks) was found; --activations needs a transformer task")
    return best


def _hidden(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return getattr(value, "last_hidden_state", None)


def _token_mask(batch: tuple) -> torch.Tensor | None:
    """An attention mask in the batch: a 0/1 integer tensor shaped like the 2-D token ids in front."""
    ids = batch[0] if batch and isinstance(batch[0], torch.Tensor) else None
    if ids is None or ids.ndim != 2 or ids.is_floating_point():
        return None
    for t in batch[1:]:
        if isinstance(t, torch.Tensor) and t.shape == ids.shape and not t.is_floating_point() \
                and bool(((t == 0) | (t == 1)).all()):
            return t.bool()
    return None


def _capture(task, model, probes, max_tokens: int) -> tuple[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Per block, (h_in, h_out) token rows (tokens, d) from forward hooks over the probe batches.

    Padding positions are dropped when the batch carries an attention mask (see :func:`_token_mask`).
    """
    prefix, blocks = find_blocks(model)
    store: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[] for _ in blocks]
    counts = [0] * len(blocks)
    current: dict[str, torch.Tensor | None] = {"mask": None}

    def hook_for(i: int):
        def hook(module, args, kwargs, output):
            h_in = args[0] if args and isinstance(args[0], torch.Tensor) else _hidden(
                kwargs.get("hidden_states", next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)))
            h_out = _hidden(output)
            if h_in is None or h_out is None or h_in.shape != h_out.shape or counts[i] >= max_tokens:
                return
            mask = current["mask"]
            if mask is not None and h_in.ndim == 3 and tuple(h_in.shape[:2]) == tuple(mask.shape):
                rows_in, rows_out = h_in.detach()[mask], h_out.detach()[mask]
            else:
                d = h_in.shape[-1]
                rows_in, rows_out = h_in.detach().reshape(-1, d), h_out.detach().reshape(-1, d)
            take = min(rows_in.shape[0], max_tokens - counts[i])
            store[i].append((rows_in[:take].double().cpu(), rows_out[:take].double().cpu()))
            counts[i] += take
        return hook

    handles = [blk.register_forward_hook(hook_for(i), with_kwargs=True) for i, blk in enumerate(blocks)]
    try:
        with torch.no_grad():
            for batch in probes:
                current["mask"] = _token_mask(batch)
                task.forward(model, batch)
                if min(counts) >= max_tokens:
                    break
    finally:
        for h in handles:
            h.remove()
    if not all(store):
        raise ConfigError(f"the blocks under {prefix!r} produced no hidden states of matching shape; "
                          "--activations needs blocks that map (..., d) to (..., d)")
    return prefix, [(torch.cat([x for x, _ in s]), torch.cat([y for _, y in s])) for s in store]


def activation_diff(task: Any, a: Any, b: Any, *, device: str = "auto", trust_pickle: bool = False,
                    max_tokens: int = 2048, k: int = 8, method: str = "local", neighbors: int = 32) -> dict[str, Any]:
    """Tokenwise/residual decomposition of every block's hidden-state update, for weights A and B.

    Probe inputs are ``task.probe_batches()`` (else the eval loader); at most ``max_tokens`` token
    rows per block. Returns the ``activations`` section of ``spectra.diff/1``: per block the
    :class:`~spectra.core.geometry.ActivationGeometry` fields suffixed ``_a`` and ``_b``.
    """
    from .noise import load_weights, resolve_device
    from .train.task import Task, load_task

    task = load_task(task) if isinstance(task, str) else task
    if not isinstance(task, Task):
        raise ConfigError(f"--activations needs a spectra.train.Task, got {type(task).__name__}")
    if not task.transformer:
        log.warning("task %r is not marked as a transformer; probing its repeated blocks anyway", task.name)
    dev = resolve_device(device)
    source = "probe_batches" if task.probe_batches is not None else "eval_loader"
    results = {}
    for tag, weights in (("a", a), ("b", b)):
        model = task.model
        load_weights(model, weights, trust_pickle=trust_pickle)
        model.to(dev).eval()
        probes = task.probe_batches() if task.probe_batches is not None else task.eval_loader
        probes = (tuple(t.to(dev) if isinstance(t, torch.Tensor) else t for t in batch) for batch in probes)
        prefix, pairs = _capture(task, model, probes, max_tokens)
        results[tag] = [activation_geometry(h, h2, k=k, method=method, neighbors=neighbors) for h, h2 in pairs]
    layers = []
    for i, (ga, gb) in enumerate(zip(results["a"], results["b"])):
        row: dict[str, Any] = {"name": f"{prefix}.{i}" if prefix else str(i), "depth": i + 1, "tokens": ga.tokens,
                               "dim": ga.dim, "projection_baseline": ga.projection_baseline}
        for f in fields(ga):
            if f.name not in row:
                row[f"{f.name}_a"], row[f"{f.name}_b"] = getattr(ga, f.name), getattr(gb, f.name)
        layers.append(row)
    config = {"task": getattr(task, "name", ""), "probes": source, "max_tokens": max_tokens, "k": k,
              "method": method, "neighbors": neighbors, "blocks": prefix,
              "reading": "update D = h_out - h_in per block; tokenwise T = A(h) h fitted per token (local: diagonal "
                         "ridge map from k nearest tokens; global: one ridge map); residual r = D - T; "
                         "dominant subspace = top-k right singular vectors of stacked T (uncentred)"}
    return {"config": config, "layers": layers}
