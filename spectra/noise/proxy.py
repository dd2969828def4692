"""The offline ``optimizer-proxy`` noise source: Adam's stored moments, matched to parameter names."""

from __future__ import annotations

import logging
import math
import re
from dataclasses import replace
from typing import Any, Mapping, Sequence

from ..core.noise import GradNorms, _noise_compute, gradient_norms
from ..errors import CheckpointError, ConfigError
from ..layers import classify
from .measure import layer_groups
from .result import NAN, NoiseResult, created_now, layer_noise, summarize

__all__ = ["optimizer_noise"]

log = logging.getLogger(__name__)

STEP_ONE = ("optimizer step 1: Adam has seen one gradient, so its noise cannot be told apart from the signal; "
            "save the optimizer state after more steps, or measure with --task")
NO_INTERVAL = ("optimizer-state proxy: one snapshot of Adam's moments, no spread to put an interval on; "
               "measure with --task for numbers to act on")

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


def _no_interval(stats):
    """A proxy estimate is never reliable: a failed one for its own reason, a measured one for lack of spread."""
    return replace(stats, reliable=False, reliable_reason=NO_INTERVAL if stats.status == "success" else stats.reason)


def optimizer_noise(checkpoint: Any, *, task: Any = None, batch_size: int | None = None,
                    trust_pickle: bool = False) -> NoiseResult:
    """Offline per-layer noise proxy from Adam/AdamW moments saved with the weights (no data needed).

    Uses :func:`spectra.core.noise.adam_noise_estimates`: tr(Sigma_B) and |G|^2 of the *training
    batch* gradient. With ``batch_size`` B, tr(Sigma) = B tr(Sigma_B) is per example, as in
    :func:`measure_noise`; without it the numbers are per training batch (B = 1). Parameter names come
    from the task's model order when ``task`` is given, else from the checkpoint's key order. A
    heuristic (stationary i.i.d. noise; drift, L2 decay inside Adam and clipping bias it): the result
    is labelled ``optimizer-proxy``, has no intervals and is never ``reliable``. Parameters at
    optimizer step 1 (one gradient seen: noise and signal cannot be separated) are ``failed`` with
    that reason rather than divided by zero.
    """
    from ..core.noise import NoiseState, NoiseStats, _noise_add, adam_noise_estimates
    from ..io import open_checkpoint
    from ..train.task import load_task

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
    estimates, m_hats, betas_seen, steps, first_step = {}, {}, set(), set(), set()
    for name, (st, grp) in matched.items():
        if "exp_avg" not in st or "exp_avg_sq" not in st:
            continue
        beta1, beta2 = (float(b) for b in grp.get("betas", (0.9, 0.999)))
        step = int(float(st.get("step", 0)))
        if step < 1:
            continue
        betas_seen.add((beta1, beta2))
        steps.add(step)
        m_hats[name] = st["exp_avg"].detach().double() / (1.0 - beta1 ** step)
        if step == 1:  # one gradient: its noise cannot be told apart from the signal
            first_step.add(name)
            continue
        g, t = adam_noise_estimates(st["exp_avg"], st["exp_avg_sq"], beta1=beta1, beta2=beta2, step=step)
        estimates[name] = (g, t * scale)
    if not steps:
        keys = sorted({k for st, _ in matched.values() for k in st})
        raise CheckpointError(f"{where}: the optimizer state has no Adam moments (exp_avg, exp_avg_sq) with "
                              f"step >= 1; found {keys or 'nothing'}")
    groups = layer_groups(candidates)
    state = _noise_add(NoiseState(), estimates, {g.name: g.params for g in groups})
    est = _noise_compute(state, [g.name for g in groups if any(k in estimates for k in g.params)])
    numel = {n: math.prod(s) for n, s, _ in candidates}
    layers = []
    for grp in groups:
        gn = gradient_norms(m_hats[grp.weight]) if grp.weight in m_hats else GradNorms(NAN, NAN, NAN, NAN)
        size = sum(numel[k] for k in grp.params)
        if any(k in first_step for k in grp.params):
            st = NoiseStats(NAN, NAN, NAN, NAN, "failed", STEP_ONE, reliable=False, reliable_reason=STEP_ONE)
        elif grp.name in est.groups:
            st = _no_interval(est.groups[grp.name])
        else:
            st = NoiseStats(NAN, NAN, NAN, NAN, "skipped", "no Adam state for these parameters", reliable=False,
                            reliable_reason="no Adam state for these parameters")
        layers.append(layer_noise(grp, st, size, gn))
    total = _no_interval(est.total if estimates else NoiseStats(NAN, NAN, NAN, NAN, "failed", STEP_ONE))
    config = {"batch_size": batch_size, "betas": sorted(betas_seen), "matched_params": len(matched),
              "step": [min(steps), max(steps)],
              "estimator": "Adam-moment proxy (heuristic): tr(Sigma_B) = (sum v_hat - |m_hat|^2)/(1 - c_t), "
                           "|G|^2 = |m_hat|^2 - c_t tr(Sigma_B); grad norms are of m_hat",
              "units": "per example" if batch_size else "per training batch (pass --batch-size for per example)"}
    return NoiseResult(tuple(layers), summarize(layers, total), config, "optimizer-proxy",
                       task=getattr(task, "name", task or ""), checkpoint=where, created=created_now())
