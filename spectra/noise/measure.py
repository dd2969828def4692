"""Measured gradient noise: two-batch estimators over micro-batch or per-example gradients."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..core.noise import GradNorms, NoiseState, _noise_compute, _noise_update, gradient_norms
from ..errors import ConfigError, TaskError
from ..layers import assign_depths, attach_vectors, classify, module_name
from .result import NAN, LayerNoise, NoiseResult, created_now, summarize
from .weights import load_weights, resolve_device

__all__ = ["measure_noise", "layer_groups", "LayerGroup", "PER_EXAMPLE_BUDGET"]

log = logging.getLogger(__name__)

#: Elements of per-example gradients materialised at once (float32: 256 MiB).
PER_EXAMPLE_BUDGET = 1 << 26


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


def _to(batch: Any, device: torch.device) -> tuple:
    if isinstance(batch, torch.Tensor):
        batch = (batch,)
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t for t in batch)


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
    from ..train.task import Task, load_task

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
    return NoiseResult(tuple(layers), summarize(layers, est.total, rounds=state.rounds, examples=examples), config,
                       "gradients", task=spec, checkpoint=where, created=created_now())
