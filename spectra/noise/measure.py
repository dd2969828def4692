"""Measured gradient noise: two-batch estimators over micro-batch or per-example gradients."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from ..core.noise import RELIABLE_SPAN, GradientNoise, GradNorms, gradient_norms
from ..errors import ConfigError, TaskError
from ..layers import assign_depths, attach_vectors, classify, module_name
from .result import NAN, NoiseResult, created_now, layer_noise, summarize
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


def _micro_batch_round(task, model, params, batch, b: int, noise: GradientNoise) -> tuple[dict, int, int]:
    """Feed n = B // b micro-batch gradients to ``noise`` as one round: ``(big_grads, b, n*b)``."""
    size = batch[0].shape[0]
    n = size // b
    for j in range(n):
        micro = tuple(t[j * b:(j + 1) * b] if isinstance(t, torch.Tensor) else t for t in batch)
        model.zero_grad(set_to_none=True)
        outputs, targets = task.forward(model, micro)
        task.loss_fn(outputs, targets).backward()
        noise.accumulate({name: p.grad for name, p in params if p.grad is not None}, batch_size=b)
    model.zero_grad(set_to_none=True)
    return noise.close_round(), b, n * b


class _TaskLoss(torch.nn.Module):
    """``forward(*batch) -> loss`` so ``torch.func.functional_call`` swaps every parameter the task uses."""

    def __init__(self, task, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self._forward, self._loss = task.forward, task.loss_fn

    def forward(self, *batch):
        outputs, targets = self._forward(self.model, batch)
        return self._loss(outputs, targets)


def _per_example_round(task, model, params, batch, noise: GradientNoise) -> tuple[dict, int, int]:
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
    for start in range(0, size, chunk):
        grads = per_example(theta, buffers, *(t[start:start + chunk] for t in batch))
        noise.accumulate({full[len("model."):]: g for full, g in grads.items()}, batch_size=1, stacked=True)
    return noise.close_round(), 1, size


def measure_noise(
    task: Any,
    checkpoint: Any = None,
    *,
    task_args: Mapping[str, Any] | None = None,
    batches: int = 8,
    micro_batch: int | None = None,
    per_example: bool = False,
    device: str = "auto",
    seed: int = 0,
    level: float = 0.95,
    trust_pickle: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> NoiseResult:
    """Measure per-layer and global gradient noise of ``task``, with confidence intervals.

    ``task`` is a task spec string (built with ``task_args``) or a built :class:`~spectra.train.Task`.
    Each of ``batches`` train batches (size B) is one round: ``B // micro_batch`` micro-batches
    (default micro_batch = max(1, B // 4)) or, with ``per_example``, every example, fed to a
    :class:`~spectra.core.noise.GradientNoise`. The model is in eval mode (dropout off, norm
    statistics frozen) so per-example gradients are well defined. Intervals at ``level`` come from
    the spread over rounds, so at least 2 batches are needed for them.

    Reproducible: a task given by name is built, and the whole measurement runs, under a torch RNG
    seeded with ``seed`` (forked, so the caller's random stream is untouched): the model's initial
    weights, the loader's shuffling seed and any random op in the forward pass follow from ``seed``.
    A task built by the caller keeps the data order its loader was built with.

    >>> result = measure_noise("synthetic", batches=4)                 # doctest: +SKIP
    >>> result.summary["b_simple"], result.summary["b_simple_ci"]      # doctest: +SKIP
    """
    if int(batches) < 1:
        raise ConfigError(f"--batches must be >= 1, got {batches}")
    if micro_batch is not None and int(micro_batch) < 1:
        raise ConfigError(f"--micro-batch must be >= 1, got {micro_batch}")
    if not 0.0 < float(level) < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level}")
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        return _measure(task, checkpoint, task_args=task_args, batches=int(batches), micro_batch=micro_batch,
                        per_example=per_example, dev=dev, seed=seed, level=float(level), trust_pickle=trust_pickle,
                        progress=progress)


def _measure(task, checkpoint, *, task_args, batches, micro_batch, per_example, dev, seed, level, trust_pickle,
             progress) -> NoiseResult:
    from ..train.task import Task, load_task

    if isinstance(task, str):
        spec, task = task, load_task(task, **dict(task_args or {}))
    else:
        spec = getattr(task, "name", "task")
    if not isinstance(task, Task):
        raise TaskError(f"expected a spectra.train.Task, got {type(task).__name__}")
    model = task.model
    where = load_weights(model, checkpoint, trust_pickle=trust_pickle) if checkpoint is not None else ""
    model.to(dev).eval()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise TaskError(f"task {spec!r}: the model has no trainable parameters")
    groups = layer_groups([(n, p.shape, p.dtype) for n, p in params])
    noise = GradientNoise(groups={g.name: g.params for g in groups}, level=level)
    norms: dict[str, list[GradNorms]] = {}
    examples, b_sizes, vmap_ok = 0, set(), True
    for batch in task.train_loader:
        if noise.state.rounds >= batches:
            break
        batch = _to(batch, dev)
        size = int(batch[0].shape[0])
        b = 1 if per_example else int(micro_batch or max(1, size // 4))
        if size // b < 2:
            log.info("skipping a batch of %d examples: fewer than two micro-batches of %d", size, b)
            continue
        big = None
        if per_example and vmap_ok:
            try:
                big, b_small, b_big = _per_example_round(task, model, params, batch, noise)
            except RuntimeError as exc:  # data-dependent control flow (HF masks) cannot be vmapped
                log.warning("torch.func per-example gradients failed (%s); falling back to one backward "
                            "pass per example (same numbers, slower)", str(exc).split("\n")[0][:120])
                noise.discard_round()
                vmap_ok = False
        if big is None:
            big, b_small, b_big = _micro_batch_round(task, model, params, batch, b, noise)
        for grp in groups:
            if grp.weight in big and bool(big[grp.weight].any()):
                norms.setdefault(grp.name, []).append(gradient_norms(big[grp.weight]))
        examples += b_big
        b_sizes.add((b_small, b_big))
        if progress is not None:
            progress(noise.state.rounds, batches, f"batch {noise.state.rounds}")
    if noise.state.rounds == 0:
        raise ConfigError("no batch could be split into two or more micro-batches: lower --micro-batch "
                          "or use --per-example")
    est = noise.compute()
    numel = dict((n, p.numel()) for n, p in params)
    layers = []
    for grp in groups:
        st, gn = est.groups[grp.name], norms.get(grp.name, [])
        mean = GradNorms(*(sum(getattr(x, f) for x in gn) / len(gn) for f in GradNorms.__dataclass_fields__)) \
            if gn else GradNorms(NAN, NAN, NAN, NAN)
        reason = st.reason if st.status != "skipped" else "no gradient: the task's loss does not use these parameters"
        layers.append(layer_noise(grp, st, sum(numel[k] for k in grp.params), mean, reason))
    b_small = min(b for b, _ in b_sizes)
    b_big = max(B for _, B in b_sizes)  # a short last batch may have used fewer micro-batches
    config = {"batches": batches, "micro_batch": None if per_example else micro_batch, "per_example": per_example,
              "per_example_method": ("torch.func" if vmap_ok else "loop") if per_example else None,
              "b_small": b_small, "b_big": b_big, "device": str(dev), "seed": seed, "mode": "eval",
              "level": level, "reliable_span": RELIABLE_SPAN,
              "estimator": "two-batch unbiased (McCandlish et al. 2018, App. A.1), mean over rounds",
              "intervals": "Student t over rounds for |G|^2 and tr(Sigma); Fieller for B_simple"}
    return NoiseResult(tuple(layers), summarize(layers, est.total, rounds=est.rounds, examples=examples), config,
                       "gradients", task=spec, checkpoint=where, created=created_now())
