"""``spectra noise``: per-layer gradient noise scale of a task's model, measured or read off an optimizer.

Two sources, labelled in the result's ``source`` field:

* ``gradients`` (:func:`measure_noise`): draw ``batches`` batches of size B from the task's train
  loader; on each, with the model fixed in eval mode, take the gradients of ``B // b`` micro-batches of
  size b (or of every example, via ``torch.func``, with ``per_example=True``: b = 1). The mean squared
  micro-batch norm and the squared norm of their mean give the unbiased two-batch estimates of |G|^2
  and tr(Sigma) per parameter (McCandlish et al. 2018, App. A.1; :mod:`spectra.core.noise`). Rounds
  are averaged (numerators and denominators separately), parameters summed into layers, layers
  summed into the global B_simple = tr(Sigma) / |G|^2.
* ``optimizer-proxy`` (:func:`optimizer_noise`): no data, a heuristic from Adam's stored moments
  (``exp_avg``, ``exp_avg_sq``); optimizer ids are matched to parameter names by order and shape.

A layer is a weight tensor (2-D and up) with its attached biases and norm weights
(:func:`spectra.layers.attach_vectors`); depth comes from :func:`spectra.layers.assign_depths`.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ._version import __version__
from .core.noise import GradNorms, NoiseState, _noise_compute, _noise_update, gradient_norms, mean_abs_difference
from .errors import CheckpointError, ConfigError, TaskError
from .layers import assign_depths, attach_vectors, classify, module_name
from .results import check_schema, jsonable, read_json, write_json

__all__ = ["NOISE_SCHEMA", "LayerNoise", "NoiseResult", "measure_noise", "optimizer_noise", "layer_groups",
           "load_weights", "resolve_device"]

log = logging.getLogger(__name__)
NOISE_SCHEMA = "spectra.noise/1"
NAN = float("nan")
#: Elements of per-example gradients materialised at once (float32: 256 MiB).
PER_EXAMPLE_BUDGET = 1 << 26


@dataclass(frozen=True)
class LayerNoise:
    """Noise statistics of one layer (its weight plus attached vectors; ``params`` lists the keys).

    ``grad_sq`` = |G|^2, ``trace_sigma`` = tr(Sigma) per example, ``b_simple`` = tr(Sigma)/|G|^2,
    ``snr`` = |G|^2/tr(Sigma). ``grad_fro``/``grad_spectral``/``grad_nuclear`` are norms of the
    weight's big-batch gradient (matrix view), averaged over rounds.
    """

    name: str
    params: tuple[str, ...]
    depth: int
    numel: int
    kind: str = "linear"
    grad_sq: float = NAN
    trace_sigma: float = NAN
    b_simple: float = NAN
    snr: float = NAN
    grad_fro: float = NAN
    grad_spectral: float = NAN
    grad_nuclear: float = NAN
    grad_effective_rank: float = NAN
    status: str = "success"
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: jsonable(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerNoise":
        known = {f.name for f in fields(cls)}
        kw = {k: (NAN if v is None else v) for k, v in data.items() if k in known}
        kw["params"] = tuple(kw.get("params") or ())
        return cls(**kw)


@dataclass(frozen=True)
class NoiseResult:
    """Result of :func:`measure_noise` or :func:`optimizer_noise`; ``to_json`` writes ``spectra.noise/1``."""

    layers: tuple[LayerNoise, ...]
    summary: Mapping[str, Any]
    config: Mapping[str, Any]
    source: str
    task: str = ""
    checkpoint: str = ""
    created: str = ""
    spectra_version: str = __version__

    def layer(self, name: str) -> LayerNoise:
        for rec in self.layers:
            if rec.name == name:
                return rec
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": NOISE_SCHEMA, "spectra_version": self.spectra_version, "created": self.created,
                "task": self.task, "checkpoint": self.checkpoint, "source": self.source,
                "config": jsonable(dict(self.config)), "summary": jsonable(dict(self.summary)),
                "layers": [rec.to_dict() for rec in self.layers]}

    def to_json(self, path: str | Path | None = None) -> str:
        """The ``spectra.noise/1`` JSON text (NaN as null); also written to ``path`` when given."""
        import json

        if path is not None:
            write_json(self.to_dict(), path)
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "noise") -> "NoiseResult":
        check_schema(data, NOISE_SCHEMA, origin)
        return cls(layers=tuple(LayerNoise.from_dict(r) for r in data.get("layers") or ()),
                   summary=dict(data.get("summary") or {}), config=dict(data.get("config") or {}),
                   source=str(data.get("source", "")), task=str(data.get("task", "")),
                   checkpoint=str(data.get("checkpoint", "")), created=str(data.get("created", "")),
                   spectra_version=str(data.get("spectra_version", "")))

    @classmethod
    def from_json(cls, path: str | Path) -> "NoiseResult":
        return cls.from_dict(read_json(path), origin=str(path))

    def to_frame(self):
        """Per-layer table as a pandas DataFrame (needs the ``report`` extra)."""
        from .errors import require

        pd = require("pandas", "report")
        rows = [dict(rec.to_dict(), params=",".join(rec.params)) for rec in self.layers]
        return pd.DataFrame(rows)


# ------------------------------------------------------------------ layers, devices, weights


@dataclass(frozen=True)
class LayerGroup:
    name: str
    kind: str
    depth: int
    params: tuple[str, ...]
    weight: str | None


def layer_groups(entries: Sequence[tuple[str, Sequence[int], Any]]) -> list[LayerGroup]:
    """Group parameter keys ``[(key, shape, dtype)]`` (in model order) into layers with depths.

    Weights (2-D and up) are layers; 0/1-D parameters join the layer they are attached to, or form a
    ``vector`` layer of their own when no weight is near (a model made only of norms).
    """
    specs = [classify(key, shape, dtype) for key, shape, dtype in entries]
    keys = [s.key for s in specs]
    layers = [s for s in specs if s.is_layer]
    vectors = [s.key for s in specs if s.kind == "vector"]
    attached = attach_vectors(keys, [s.name for s in layers], vectors)
    members: dict[str, list[str]] = {s.name: [s.key] for s in layers}
    kinds = {s.name: s.kind for s in layers}
    weights = {s.name: s.key for s in layers}
    for key in vectors:
        owner = attached.get(key) or module_name(key)
        if owner not in members:
            members[owner], kinds[owner], weights[owner] = [], "vector", None
        members[owner].append(key)
    order = {k: i for i, k in enumerate(keys)}
    names = sorted(members, key=lambda n: min(order[k] for k in members[n]))
    depths = assign_depths(names, [kinds[n] for n in names])
    return [LayerGroup(n, kinds[n], depths[n], tuple(sorted(members[n], key=order.__getitem__)), weights[n])
            for n in names]


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a ConfigError."""
    if device in ("auto", "", None):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda") from None


def load_weights(model: torch.nn.Module, source: Any, *, trust_pickle: bool = False) -> str:
    """Load a checkpoint's tensors into ``model`` (non-strict, shapes checked); returns its display name."""
    from .io import open_checkpoint

    with open_checkpoint(source, trust_pickle=trust_pickle) as ckpt:
        state = {key: tensor for key, tensor in ckpt}
        where = str(ckpt.path)
    own = model.state_dict()
    state = _align_prefix(state, own)
    bad = [f"{k} {tuple(t.shape)} vs model {tuple(own[k].shape)}"
           for k, t in state.items() if k in own and tuple(t.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{where}: shapes do not fit the task's model: {'; '.join(bad[:3])}")
    matched = [k for k in state if k in own]
    if not matched:
        raise CheckpointError(f"{where}: none of its {len(state)} tensors are in the task's model "
                              f"(model keys look like {next(iter(own), '?')!r}, checkpoint keys like "
                              f"{next(iter(state), '?')!r})")
    missing = [k for k in own if k not in state]
    if missing:
        log.warning("%s: %d model tensors not in the checkpoint keep their initial values (e.g. %s)",
                    where, len(missing), missing[0])
    model.load_state_dict({k: state[k] for k in matched}, strict=False)
    return where


def _align_prefix(state: dict[str, torch.Tensor], own: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Prepend the model's wrapper prefix when the checkpoint holds only a submodule.

    A bare encoder file (``embeddings.word_embeddings.weight``) fits a task model that wraps it
    (``encoder.embeddings.word_embeddings.weight``) when one prefix makes most keys match.
    """
    if not state or sum(k in own for k in state) * 2 >= len(state):
        return state
    first = next(iter(state))
    prefixes = {k[: -len(first)] for k in own if k.endswith("." + first)}
    best = max(prefixes, key=lambda p: sum(p + k in own for k in state), default=None)
    if best is None or sum(best + k in own for k in state) * 2 < len(state):
        return state
    log.info("checkpoint keys matched under the model prefix %r", best)
    return {best + k: v for k, v in state.items()}


def _created() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _to(batch: Any, device: torch.device) -> tuple:
    if isinstance(batch, torch.Tensor):
        batch = (batch,)
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in batch)


# ------------------------------------------------------------------ measuring


def _micro_batch_round(task, model, params, batch, b: int) -> tuple[dict, dict, int, int]:
    """Squared norms of n = B // b micro-batch gradients: ``(small_sq, big_grads, b, n*b)``."""
    size = batch[0].shape[0]
    n = size // b
    sums: dict[str, torch.Tensor] = {}
    sq: dict[str, float] = {}
    for j in range(n):
        micro = tuple(t[j * b:(j + 1) * b] if isinstance(t, torch.Tensor) else t for t in batch)
        model.zero_grad(set_to_none=True)
        outputs, targets = task.forward(model, micro)
        task.loss_fn(outputs, targets).backward()
        for name, p in params:
            if p.grad is None:
                continue
            g = p.grad.detach().to(torch.float64)
            sq[name] = sq.get(name, 0.0) + float(g.square().sum())
            sums[name] = sums[name] + g if name in sums else g.clone()
    model.zero_grad(set_to_none=True)
    return {k: v / n for k, v in sq.items()}, {k: v / n for k, v in sums.items()}, b, n * b


class _TaskLoss(torch.nn.Module):
    """``forward(*batch) -> loss`` so ``torch.func.functional_call`` swaps every parameter the task uses."""

    def __init__(self, task, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self._forward, self._loss = task.forward, task.loss_fn

    def forward(self, *batch):
        outputs, targets = self._forward(self.model, batch)
        return self._loss(outputs, targets)


def _per_example_round(task, model, params, batch) -> tuple[dict, dict, int, int]:
    """Per-example gradients with ``torch.func.vmap(grad(...))``, in chunks bounded by memory."""
    from torch.func import functional_call, grad, vmap

    if not all(isinstance(t, torch.Tensor) for t in batch):
        raise TaskError("--per-example needs batches made only of tensors; use --micro-batch instead")
    wrapper = _TaskLoss(task, model)
    theta = {f"model.{n}": p.detach() for n, p in params}
    buffers = {f"model.{n}": b for n, b in model.named_buffers()}

    def loss_one(theta, buffers, *example):
        return functional_call(wrapper, {**theta, **buffers}, tuple(t.unsqueeze(0) for t in example))

    per_example = vmap(grad(loss_one), in_dims=(None, None) + (0,) * len(batch), randomness="different")
    size = batch[0].shape[0]
    chunk = max(1, PER_EXAMPLE_BUDGET // max(1, sum(p.numel() for _, p in params)))
    sums: dict[str, torch.Tensor] = {}
    sq: dict[str, float] = {}
    for start in range(0, size, chunk):
        grads = per_example(theta, buffers, *(t[start:start + chunk] for t in batch))
        for full, g in grads.items():
            name = full[len("model."):]
            g = g.detach().to(torch.float64)
            sq[name] = sq.get(name, 0.0) + float(g.square().sum())
            total = g.sum(0)
            sums[name] = sums[name] + total if name in sums else total
    return {k: v / size for k, v in sq.items()}, {k: v / size for k, v in sums.items()}, 1, size


def measure_noise(
    task: Any,
    checkpoint: Any = None,
    *,
    batches: int = 8,
    micro_batch: int | None = None,
    per_example: bool = False,
    device: str = "auto",
    seed: int = 0,
    trust_pickle: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> NoiseResult:
    """Measure per-layer and global gradient noise of ``task`` (a Task or a task spec string).

    Each of ``batches`` train batches (size B) is one round: ``B // micro_batch`` micro-batches
    (default micro_batch = max(1, B // 4)) or, with ``per_example``, every example. The model is in
    eval mode (dropout off, norm statistics frozen) so per-example gradients are well defined.

    >>> result = measure_noise("synthetic", batches=4)                 # doctest: +SKIP
    >>> result.summary["b_simple"], result.layer("net.0").snr         # doctest: +SKIP
    """
    from .train.task import Task, load_task

    if isinstance(task, str):
        spec, task = task, load_task(task)
    else:
        spec = getattr(task, "name", "task")
    if not isinstance(task, Task):
        raise TaskError(f"expected a spectra.train.Task, got {type(task).__name__}")
    if int(batches) < 1:
        raise ConfigError(f"--batches must be >= 1, got {batches}")
    if micro_batch is not None and int(micro_batch) < 1:
        raise ConfigError(f"--micro-batch must be >= 1, got {micro_batch}")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    model = task.model
    where = load_weights(model, checkpoint, trust_pickle=trust_pickle) if checkpoint is not None else ""
    model.to(dev).eval()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise TaskError(f"task {spec!r}: the model has no trainable parameters")
    groups = layer_groups([(n, p.shape, p.dtype) for n, p in params])
    state = NoiseState()
    norms: dict[str, list[GradNorms]] = {}
    examples, b_sizes, vmap_ok = 0, set(), True
    for batch in task.train_loader:
        if state.rounds >= batches:
            break
        batch = _to(batch, dev)
        size = int(batch[0].shape[0])
        b = 1 if per_example else int(micro_batch or max(1, size // 4))
        if size // b < 2:
            log.info("skipping a batch of %d examples: fewer than two micro-batches of %d", size, b)
            continue
        if per_example and vmap_ok:
            try:
                small, big, b_small, b_big = _per_example_round(task, model, params, batch)
            except RuntimeError as exc:  # data-dependent control flow (HF masks) cannot be vmapped
                log.warning("torch.func per-example gradients failed (%s); falling back to one backward "
                            "pass per example (same numbers, slower)", str(exc).split("\n")[0][:120])
                vmap_ok = False
        if per_example and not vmap_ok:
            small, big, b_small, b_big = _micro_batch_round(task, model, params, batch, 1)
        elif not per_example:
            small, big, b_small, b_big = _micro_batch_round(task, model, params, batch, b)
        small = {k: v for k, v in small.items() if v > 0}  # unused parameters (zero under torch.func)
        state = _noise_update(state, small, {k: float(g.square().sum()) for k, g in big.items()}, b_small, b_big)
        for grp in groups:
            if grp.weight in big:
                norms.setdefault(grp.name, []).append(gradient_norms(big[grp.weight]))
        examples += b_big
        b_sizes.add((b_small, b_big))
        if progress is not None:
            progress(state.rounds, batches, f"batch {state.rounds}")
    if state.rounds == 0:
        raise ConfigError("no batch could be split into two or more micro-batches: lower --micro-batch "
                          "or use --per-example")
    est = _noise_compute(state, {g.name: g.params for g in groups})
    numel = dict((n, p.numel()) for n, p in params)
    layers = []
    for grp in groups:
        st, gn = est.groups[grp.name], norms.get(grp.name, [])
        mean = (lambda attr: sum(getattr(x, attr) for x in gn) / len(gn)) if gn else (lambda attr: NAN)
        reason = st.reason if st.status != "skipped" else "no gradient: the task's loss does not use these parameters"
        layers.append(LayerNoise(grp.name, grp.params, grp.depth, sum(numel[k] for k in grp.params), grp.kind,
                                 st.grad_sq, st.trace_sigma, st.b_simple, st.snr, mean("fro"), mean("spectral"),
                                 mean("nuclear"), mean("effective_rank"), st.status, reason))
    b_small = min(b for b, _ in b_sizes)
    b_big = max(B for _, B in b_sizes)  # a short last batch may have used fewer micro-batches
    config = {"batches": batches, "micro_batch": None if per_example else micro_batch, "per_example": per_example,
              "per_example_method": ("torch.func" if vmap_ok else "loop") if per_example else None,
              "b_small": b_small, "b_big": b_big, "device": str(dev), "seed": seed, "mode": "eval",
              "estimator": "two-batch unbiased (McCandlish et al. 2018, App. A.1), mean over rounds"}
    return NoiseResult(tuple(layers), _summary(layers, est.total, rounds=state.rounds, examples=examples), config,
                       "gradients", task=spec, checkpoint=where, created=_created())


def _summary(layers: Sequence[LayerNoise], total, **extra) -> dict[str, Any]:
    ok = [r for r in layers if r.status == "success"]
    ordered = sorted(ok, key=lambda r: r.depth)
    b = sorted(r.b_simple for r in ok)
    return {"b_simple": total.b_simple, "grad_sq": total.grad_sq, "trace_sigma": total.trace_sigma,
            "snr": total.snr, "status": total.status, "reason": total.reason, "num_layers": len(layers),
            "num_failed": sum(r.status == "failed" for r in layers),
            "b_simple_median": b[len(b) // 2] if b else NAN,
            "grad_nuclear_mad": mean_abs_difference([r.grad_nuclear for r in ordered]), **extra}


# ------------------------------------------------------------------ optimizer-state proxy

#: Checkpoint tensors that are buffers, never optimizer parameters (used when no task gives the order).
_BUFFER = re.compile(r"(running_mean|running_var|num_batches_tracked|position_ids|masked_bias|\.attn\.bias)$")


def _match_optimizer(opt: Mapping[str, Any], candidates: Sequence[tuple[str, tuple, Any]], where: str) -> dict:
    """``{param_name: optimizer_state}`` from a torch optimizer state dict, by order and shape.

    Optimizer ids are positions in ``param_groups[*]['params']``, so they are zipped with the model's
    parameter order; when the counts differ, candidates whose shape does not fit are skipped (buffers,
    frozen weights). Every stored ``exp_avg`` must have its parameter's shape.
    """
    state, groups = opt.get("state"), opt.get("param_groups")
    if not isinstance(state, Mapping) or not isinstance(groups, list):
        raise CheckpointError(f"{where}: the optimizer entry is not a torch optimizer state dict")
    ids = [(pid, grp) for grp in groups for pid in grp.get("params", ())]
    if len(ids) > len(candidates):
        raise CheckpointError(f"{where}: the optimizer has {len(ids)} parameters but the model only "
                              f"{len(candidates)}; pass the --task that was trained")
    out: dict[str, tuple[Mapping, Mapping]] = {}
    j, skipped = 0, []
    for pid, grp in ids:
        st = state.get(pid, state.get(str(pid)))
        avg = st.get("exp_avg") if isinstance(st, Mapping) else None
        while avg is not None and len(ids) < len(candidates) and j < len(candidates) \
                and tuple(candidates[j][1]) != tuple(avg.shape):
            skipped.append(candidates[j][0])
            j += 1
        if j >= len(candidates):
            raise CheckpointError(f"{where}: optimizer parameter {pid} ({tuple(avg.shape)}) matches no model "
                                  "parameter by shape and order; pass the --task that was trained")
        name, shape, _ = candidates[j]
        if avg is not None and tuple(avg.shape) != tuple(shape):
            raise CheckpointError(f"{where}: optimizer parameter {pid} has shape {tuple(avg.shape)} but "
                                  f"parameter {name!r} in the same position has {tuple(shape)}")
        if st:
            out[name] = (st, grp)
        j += 1
    if skipped:
        log.warning("%s: matched optimizer state by shape; %d tensors had none (e.g. %s)", where, len(skipped),
                    skipped[0])
    return out


def optimizer_noise(checkpoint: Any, *, task: Any = None, batch_size: int | None = None,
                    trust_pickle: bool = False) -> NoiseResult:
    """Offline per-layer noise proxy from Adam/AdamW moments saved with the weights (no data needed).

    Uses :func:`spectra.core.noise.adam_noise_estimates`: tr(Sigma_B) and |G|^2 of the *training
    batch* gradient. With ``batch_size`` B, tr(Sigma) = B tr(Sigma_B) is per example, as in
    :func:`measure_noise`; without it the numbers are per training batch (B = 1). Parameter names come
    from the task's model order when ``task`` is given, else from the checkpoint's key order. A
    heuristic (stationary i.i.d. noise; drift, L2 decay inside Adam and clipping bias it): the result
    is labelled ``optimizer-proxy``.
    """
    from .core.noise import NoiseState, adam_noise_estimates
    from .io import open_checkpoint
    from .train.task import load_task

    if batch_size is not None and int(batch_size) < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    scale = float(batch_size or 1)
    with open_checkpoint(checkpoint, trust_pickle=trust_pickle) as ckpt:
        where, opt = str(ckpt.path), ckpt.optimizer_state()
        if task is not None:
            model = (load_task(task) if isinstance(task, str) else task).model
            candidates = [(n, tuple(p.shape), p.dtype) for n, p in model.named_parameters() if p.requires_grad]
        else:
            infos = [ckpt.info(k) for k in ckpt.keys()]
            candidates = [(i.key, tuple(i.shape), i.dtype) for i in infos
                          if classify(i.key, i.shape, i.dtype).kind != "skipped" and not _BUFFER.search(i.key)]
    if opt is None:
        raise CheckpointError(f"{where}: no optimizer state found; save it with the weights, e.g. "
                              "torch.save({'model': model.state_dict(), 'optimizer': opt.state_dict()}, path)")
    matched = _match_optimizer(opt, candidates, where)
    grad_sq, trace, m_hats, betas_seen = {}, {}, {}, set()
    for name, (st, grp) in matched.items():
        if "exp_avg" not in st or "exp_avg_sq" not in st:
            continue
        beta1, beta2 = (float(b) for b in grp.get("betas", (0.9, 0.999)))
        step = int(float(st.get("step", 0)))
        if step < 1:
            continue
        betas_seen.add((beta1, beta2))
        g, t = adam_noise_estimates(st["exp_avg"], st["exp_avg_sq"], beta1=beta1, beta2=beta2, step=step)
        grad_sq[name], trace[name] = g, t * scale
        m_hats[name] = st["exp_avg"].detach().double() / (1.0 - beta1 ** step)
    if not grad_sq:
        keys = sorted({k for st, _ in matched.values() for k in st})
        raise CheckpointError(f"{where}: the optimizer state has no Adam moments (exp_avg, exp_avg_sq) with "
                              f"step >= 1; found {keys or 'nothing'}")
    groups = layer_groups(candidates)
    est = _noise_compute(NoiseState(grad_sq=grad_sq, trace_sigma=trace, weight=1.0, rounds=1),
                         {g.name: g.params for g in groups})
    numel = {n: math.prod(s) for n, s, _ in candidates}
    layers = []
    for grp in groups:
        st = est.groups[grp.name]
        gn = gradient_norms(m_hats[grp.weight]) if grp.weight in m_hats else GradNorms(NAN, NAN, NAN, NAN)
        reason = st.reason if st.status != "skipped" else "no Adam state for these parameters"
        layers.append(LayerNoise(grp.name, grp.params, grp.depth, sum(numel[k] for k in grp.params), grp.kind,
                                 st.grad_sq, st.trace_sigma, st.b_simple, st.snr, gn.fro, gn.spectral, gn.nuclear,
                                 gn.effective_rank, st.status, reason))
    config = {"batch_size": batch_size, "betas": sorted(betas_seen), "matched_params": len(matched),
              "estimator": "Adam-moment proxy (heuristic): tr(Sigma_B) = (sum v_hat - |m_hat|^2)/(1 - c_t), "
                           "|G|^2 = |m_hat|^2 - c_t tr(Sigma_B); grad norms are of m_hat",
              "units": "per example" if batch_size else "per training batch (pass --batch-size for per example)"}
    return NoiseResult(tuple(layers), _summary(layers, est.total), config, "optimizer-proxy",
                       task=getattr(task, "name", task or ""), checkpoint=where, created=_created())
