"""The per-step functions of :class:`~spectra.optim.dals.DALS` (the formulas are in that module).

Internal to DALS and kept apart so the optimizer class stays readable: the Grokfast filter, the SGD
and Adam directions, the LARS-style trust ratios and the update, each with a single-tensor and a
foreach path (torch's own optimizers split the same way into a class and functional kernels), and
the CPU scratch buffer of the single-tensor path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .grokfast import lerp_

__all__ = ["Pending", "adam_direction", "apply_updates", "filter_gradients", "needs_scratch", "scratch_views",
           "sgd_direction", "trust_ratio", "trust_scales"]


def trust_ratio(w_norm: Tensor, u_norm: Tensor, *, clip: tuple[float, float] = (0.1, 10.0),
                eps: float = 1e-8) -> Tensor:
    r"""LARS-style trust ratio ``clip(||w|| / (||u|| + eps), lo, hi)``, 1 where a norm is zero.

    >>> trust_ratio(torch.tensor([2.0, 0.0, 100.0]), torch.tensor([1.0, 3.0, 1.0]), eps=0.0)
    tensor([ 2.,  1., 10.])
    """
    ok = (w_norm > 0) & (u_norm > 0)
    ratio = torch.where(ok, w_norm / (u_norm + eps), torch.ones_like(w_norm))
    return ratio.clamp(clip[0], clip[1])


@dataclass
class Pending:
    """One group's step between the direction and the update (filled in by ``trust_scales``).

    The true update of tensor i is ``coefs[i] * updates[i]``, divided by ``denoms[i]`` where that is
    set (Adam's bias corrections are folded into ``coefs`` so no extra pass over the tensors is
    needed; exempt Adam tensors keep numerator and denominator apart for one fused ``addcdiv``).
    ``updates`` may alias optimizer state or ``p.grad`` and are never modified.
    """

    group: dict[str, Any]
    lr: float
    params: list[Tensor]
    updates: list[Tensor]
    denoms: list[Tensor | None] | None
    coefs: list[float] | None
    adapt: list[bool]
    foreach: bool
    scales: list[Tensor] = field(default_factory=list)


def needs_scratch(group: dict[str, Any], lamb: float) -> bool:
    """Whether a single-tensor group writes temporaries (a filtered or negated gradient, Adam's
    denominator, a Nesterov direction)."""
    return group["base"] == "adam" or group["maximize"] or lamb != 0.0 or bool(group["nesterov"])


def scratch_views(requests: list[tuple[list[Tensor], bool]], cache: dict[str, Any]) -> list[list[Tensor] | None]:
    """Yield, per request, a list of scratch tensors shaped like its gradients (``None`` if not needed).

    The single-tensor path's temporaries are views into one flat buffer per (device, dtype), kept in
    ``cache`` between steps (it is derived data, not optimizer state, and never saved). On CPU this
    matters more than the arithmetic: torch's CPU allocator does not cache, so a step that allocates
    and frees parameter-sized temporaries pays a page fault per 4 kB to get the memory back from the
    OS on every step (see reports/bench/optim_step.md). The filtered gradient, then Adam's
    denominator, then its quotient ``m / d`` reuse the same view, so the buffer is one parameter-sized
    tensor at most, the same memory that allocating the temporaries would take at the step's peak.
    """
    layout = tuple(tuple((g.shape, g.dtype, g.device) for g in grads) if needed else None
                   for grads, needed in requests)
    if cache.get("layout") == layout:  # the usual case: same tensors as last step, same views
        return cache["views"]
    flats: dict[tuple, Tensor] = cache.setdefault("flats", {})
    sizes: dict[tuple, int] = {}
    for grads, needed in requests:
        if needed:
            for g in grads:
                key = (g.device, g.dtype)
                sizes[key] = sizes.get(key, 0) + g.numel()
    for key, n in sizes.items():
        if key not in flats or flats[key].numel() < n:
            flats[key] = torch.empty(n, device=key[0], dtype=key[1])
    offsets = dict.fromkeys(sizes, 0)
    result: list[list[Tensor] | None] = []
    for grads, needed in requests:
        if not needed:
            result.append(None)
            continue
        views = []
        for g in grads:
            key = (g.device, g.dtype)
            start = offsets[key]
            offsets[key] = start + g.numel()
            views.append(flats[key][start:start + g.numel()].view(g.shape))
        result.append(views)
    cache["layout"], cache["views"] = layout, result
    return result


def filter_gradients(grads: list[Tensor], states: list[dict], group: dict[str, Any], lamb: float,
            foreach: bool, outs: list[Tensor] | None = None) -> list[Tensor]:
    """Sign-correct the gradients and run the (depth-aware) Grokfast EMA filter (p.grad untouched).

    The EMA ``h`` starts at zero, so every past gradient weighs ``(1 - a) a^(t-s)``, and the filter
    adds it with the amplification ``lambda_n = lambda (1 - a^n)`` after ``n`` updates: in proportion
    to the weight mass the EMA holds. Two failures led here. The reference init ``h_1 = g_1`` gives
    the first gradient the weight ``a^(t-1)`` (82% after ten steps at a = 0.98); in fine-tuning that is
    the large gradient of a freshly initialised head, and the filter kept pushing the whole network
    along it (DALS fell to chance on digits-transfer). A bias-corrected EMA at full amplification
    removed that bias but still amplified, at full strength, an average of the first few gradients,
    which is not yet a slow component: DALS trailed its own no-Grokfast ablation on digits-transfer
    by 3.6 points (94.9% vs 98.5%). With the ramp DALS reaches 97.7% there (seed spread 0.5 points);
    when it was introduced, 11 of the 16 task-variant pairs of our strategy benchmarks gained (up to
    3.5 points), 2 tied and 3 lost at most 0.4 points, within seed noise (reports/bench/strategies*.md).

    Both terms in one form: ``lambda_n h^ = lambda h`` with the bias-corrected ``h^ = h / (1 - a^n)``,
    so the filtered gradient is ``(g + lambda h) / (1 + lambda_n)`` (normalized: equal to ``g`` when
    ``g`` and ``h^`` agree) or the reference ``g + lambda h`` (``grokfast_normalize=False``).

    The state holds ``h^`` (``grokfast_avg``), so the filter costs two passes over each tensor:
    since ``a (1 - a^(n-1)) + (1 - a) = 1 - a^n``, the corrected average updates as a lerp,
    ``h^_n = lerp(h^_(n-1), g, (1 - a) / (1 - a^n))`` (exactly ``g`` at n = 1), and the normalized
    filtered gradient is ``lerp(g, h^, lambda_n / (1 + lambda_n))``.
    ``outs`` (single-tensor path) receives the negated or filtered gradients instead of new tensors.
    """
    if group["maximize"]:
        if foreach:
            grads = list(torch._foreach_neg(grads))
        else:
            grads = [torch.neg(g, out=o) for g, o in zip(grads, outs)] if outs else [-g for g in grads]
    if group["grokfast_lamb"] == 0.0:
        return grads
    alpha = group["grokfast_alpha"]
    buckets: dict[int, list[int]] = {}  # tensors sharing n update in one call
    for i, (s, g) in enumerate(zip(states, grads)):
        if "grokfast_avg" not in s:
            s["grokfast_avg"] = torch.zeros_like(g, memory_format=torch.preserve_format)
            s["grokfast_steps"] = 0
        s["grokfast_steps"] += 1
        buckets.setdefault(s["grokfast_steps"], []).append(i)
    avgs = [s["grokfast_avg"] for s in states]
    for n, idx in buckets.items():
        lerp_([avgs[i] for i in idx], [grads[i] for i in idx], (1.0 - alpha) / (1.0 - alpha ** n), foreach=foreach)
    if lamb == 0.0:
        return grads
    # amplification in proportion to the weight mass the EMA holds: lambda_n = lambda (1 - a^n)
    normalize = group["grokfast_normalize"]
    out: list[Tensor] = list(grads)
    if outs is None:
        outs = [None] * len(grads)  # type: ignore[list-item]
    for n, idx in buckets.items():
        lam = lamb * (1.0 - alpha ** n)
        gs, hs = [grads[i] for i in idx], [avgs[i] for i in idx]
        if foreach:
            res = list(torch._foreach_lerp(gs, hs, lam / (1.0 + lam))) if normalize else \
                list(torch._foreach_add(gs, hs, alpha=lam))
        elif normalize:
            res = [torch.lerp(g, h, lam / (1.0 + lam), out=outs[i]) if outs[i] is not None
                   else torch.lerp(g, h, lam / (1.0 + lam)) for g, h, i in zip(gs, hs, idx)]
        else:
            res = [torch.add(g, h, alpha=lam, out=outs[i]) if outs[i] is not None else g.add(h, alpha=lam)
                   for g, h, i in zip(gs, hs, idx)]
        for i, r in zip(idx, res):
            out[i] = r
    return out


def sgd_direction(grads: list[Tensor], states: list[dict], group: dict[str, Any], foreach: bool,
                   outs: list[Tensor] | None = None) -> list[Tensor]:
    """Momentum SGD direction, torch ``SGD`` semantics (the buffer starts at the first gradient).

    A Nesterov direction ``g + momentum * buf`` is written into ``outs`` when given."""
    momentum, dampening = group["momentum"], group["dampening"]
    if momentum == 0.0:
        return grads
    old = [i for i, s in enumerate(states) if "momentum_buffer" in s]
    bufs = [states[i]["momentum_buffer"] for i in old]
    if bufs:
        if foreach:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, [grads[i] for i in old], alpha=1.0 - dampening)
        else:
            for b, i in zip(bufs, old):
                b.mul_(momentum).add_(grads[i], alpha=1.0 - dampening)
    for s, g in zip(states, grads):
        if "momentum_buffer" not in s:
            s["momentum_buffer"] = g.detach().clone(memory_format=torch.preserve_format)
    bufs = [s["momentum_buffer"] for s in states]
    if not group["nesterov"]:
        return bufs
    if foreach:
        return list(torch._foreach_add(grads, bufs, alpha=momentum))
    if outs is not None:
        return [torch.add(g, b, alpha=momentum, out=o) for g, b, o in zip(grads, bufs, outs)]
    return [g.add(b, alpha=momentum) for g, b in zip(grads, bufs)]


def adam_direction(grads: list[Tensor], states: list[dict], group: dict[str, Any], adapt: list[bool],
                    foreach: bool, outs: list[Tensor] | None = None
                    ) -> tuple[list[Tensor], list[Tensor | None], list[float]]:
    """Adam direction ``m^ / (sqrt(v^) + eps)`` as ``coef * m / (sqrt(v) + eps sqrt(bc2))``.

    With ``coef = sqrt(bc2) / bc1`` (``bc_k = 1 - beta_k^t``) this equals the bias-corrected form
    exactly; the coefficient is applied to the trust-ratio norm and the final scale, not per element.
    Returns ``(updates, denoms, coefs)``: a tensor with a trust ratio gets its quotient ``m / d``
    (computed into the denominator's buffer, needed whole for its norm) and ``denoms[i] = None``;
    an exempt tensor gets ``updates[i] = m`` (the state itself, not to be modified) and its
    denominator, so the update is one fused ``addcdiv`` as in torch's AdamW. ``outs`` (single-tensor
    path) receive the denominators; one may hold the filtered gradient, which is dead by then.
    """
    beta1, beta2 = group["betas"]
    for s, g in zip(states, grads):
        if "exp_avg" not in s:
            s["step"] = 0
            s["exp_avg"] = torch.zeros_like(g, memory_format=torch.preserve_format)
            s["exp_avg_sq"] = torch.zeros_like(g, memory_format=torch.preserve_format)
        s["step"] += 1
    exp_avgs = [s["exp_avg"] for s in states]
    exp_avg_sqs = [s["exp_avg_sq"] for s in states]
    bc2_sqrt = [math.sqrt(1.0 - beta2 ** s["step"]) for s in states]
    coefs = [c2 / (1.0 - beta1 ** s["step"]) for c2, s in zip(bc2_sqrt, states)]
    eps = [group["eps"] * c2 for c2 in bc2_sqrt]
    picked = [i for i, a in enumerate(adapt) if a]
    if foreach:
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
        denoms: list[Tensor | None] = list(torch._foreach_sqrt(exp_avg_sqs))
        torch._foreach_add_(denoms, eps)
        if picked:  # (the Python binding has no out= here; on CUDA the allocator caches anyway)
            quotients = torch._foreach_div([exp_avgs[i] for i in picked], [denoms[i] for i in picked])
            for i, q in zip(picked, quotients):
                denoms[i] = q
    else:
        denoms = []
        for i, (m, v, g, e, a) in enumerate(zip(exp_avgs, exp_avg_sqs, grads, eps, adapt)):
            m.lerp_(g, 1.0 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
            d = (torch.sqrt(v, out=outs[i]) if outs is not None else v.sqrt()).add_(e)
            denoms.append(torch.div(m, d, out=d) if a else d)
    updates = list(exp_avgs)
    for i in picked:
        updates[i], denoms[i] = denoms[i], None  # type: ignore[call-overload]
    return updates, denoms, coefs


def _norms(tensors: list[Tensor], foreach: bool, home: torch.device, acc: torch.dtype) -> Tensor:
    """Full-tensor L2 norms as one vector on ``home`` in ``acc`` (at least float32: bf16-safe).

    Contiguous float32/float64 CPU tensors use a BLAS dot product (about 2.4x faster than
    ``vector_norm`` when the tensor is not in cache) and one square root for the whole vector;
    everything else uses ``vector_norm`` / ``_foreach_norm``.
    """
    if home.type == "cpu" and all(x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
                                  and x.is_contiguous() for x in tensors):
        squares = [torch.dot(x.view(-1), x.view(-1)) for x in tensors]
        return torch.stack([q if q.dtype == acc else q.to(acc) for q in squares]).sqrt()
    out: list[Tensor | None] = [None] * len(tensors)
    buckets: dict[tuple, list[int]] = {}
    for i, x in enumerate(tensors):
        buckets.setdefault((x.device, x.dtype), []).append(i)
    for (_, dtype), idx in buckets.items():
        accumulate = torch.float64 if dtype == torch.float64 else torch.float32
        xs = [tensors[i] for i in idx]
        if foreach:
            norms = torch._foreach_norm(xs, 2, dtype=accumulate)
        else:
            norms = [torch.linalg.vector_norm(x, dtype=accumulate) for x in xs]
        for i, n in zip(idx, norms):
            out[i] = n
    if all(n.device == home and n.dtype == acc for n in out):  # type: ignore[union-attr]
        return torch.stack(out)  # type: ignore[arg-type]
    return torch.stack([n.to(home, acc) for n in out])  # type: ignore[union-attr]


def _times(vector: Tensor, factors: list[float]) -> Tensor:
    """``vector * factors`` elementwise, the factors Python floats (no host-to-device copy on CUDA)."""
    if all(f == 1.0 for f in factors):
        return vector
    if vector.device.type == "cpu":
        return vector * torch.tensor(factors, dtype=vector.dtype)
    return torch.stack(torch._foreach_mul(list(vector.unbind()), factors))


def trust_scales(pending: list[Pending]) -> None:
    """Fill ``item.scales`` with each adapted tensor's final scale ``coef * tau^`` (0-d, on its device).

    Everything after the norms is a handful of operations on two short vectors (one entry per adapted
    tensor) on the first tensor's device; nothing is read back to the host.
    """
    picked = [(item, i) for item in pending for i, a in enumerate(item.adapt) if a]
    if not picked:
        return
    foreach = any(item.foreach for item in pending)
    ws = [item.params[i] for item, i in picked]
    us = [item.updates[i] for item, i in picked]
    home = ws[0].device
    acc = torch.float64 if any(w.dtype == torch.float64 for w in ws) else torch.float32

    w_norm, u_norm = _norms(ws, foreach, home, acc), _norms(us, foreach, home, acc)
    coefs = [item.coefs[i] if item.coefs is not None else 1.0 for item, i in picked]
    u_norm = _times(u_norm, coefs)  # ||coef * u|| without touching u
    counts = [sum(item.adapt) for item in pending]
    bands = {(tuple(item.group["trust_clip"]), item.group["trust_eps"]) for item, n in zip(pending, counts) if n}
    if len(bands) == 1:
        (clip, eps), = bands
        tau = trust_ratio(w_norm, u_norm, clip=clip, eps=eps)
    else:  # each group clips with its own band
        parts, start = [], 0
        for item, n in zip(pending, counts):
            if n:
                parts.append(trust_ratio(w_norm[start:start + n], u_norm[start:start + n],
                                         clip=item.group["trust_clip"], eps=item.group["trust_eps"]))
            start += n
        tau = torch.cat(parts)
    flags = [bool(item.group["normalize_trust"]) for item, n in zip(pending, counts) if n]
    if all(flags):
        tau = tau / tau.mean()
    elif any(flags):  # normalize only the groups that ask for it; the mask is built on the device
        mask = torch.cat([(torch.ones if item.group["normalize_trust"] else torch.zeros)(n, dtype=torch.bool,
                                                                                          device=home)
                          for item, n in zip(pending, counts) if n])
        mean = torch.where(mask, tau, torch.zeros_like(tau)).sum() / mask.sum()
        tau = torch.where(mask, tau / mean, tau)
    tau = _times(tau, coefs)  # the final scale of an Adam-base tensor is coef * tau^
    same = all(w.device == home for w in ws)
    for (item, i), value in zip(picked, tau.unbind()):
        item.scales.append(value if same else value.to(item.params[i].device))


def apply_updates(item: Pending) -> None:
    """``w <- w (1 - lr wd) - lr * scale * u``; scale = coef * tau^ (adapted) or coef (exempt)."""
    params, updates, lr, wd = item.params, item.updates, item.lr, item.group["weight_decay"]
    if wd != 0.0:
        if item.foreach:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        else:
            for p in params:
                p.mul_(1.0 - lr * wd)
    coefs = item.coefs if item.coefs is not None else [1.0] * len(params)
    adapted = [i for i, a in enumerate(item.adapt) if a]
    exempt = [i for i, a in enumerate(item.adapt) if not a]
    if adapted:  # one fused pass: w += -lr * u * (coef tau^), the scale a 0-d device tensor
        scales = item.scales
        ps, us = [params[i] for i in adapted], [updates[i] for i in adapted]
        if item.foreach:
            torch._foreach_addcmul_(ps, us, scales, value=-lr)
        else:
            for p, u, s in zip(ps, us, scales):
                p.addcmul_(u, s, value=-lr)
    if not exempt:
        return
    ps, us = [params[i] for i in exempt], [updates[i] for i in exempt]
    if item.denoms is not None:  # Adam base: w += -lr coef m / d in one pass, as torch's AdamW does
        ds = [item.denoms[i] for i in exempt]
        steps = [-lr * coefs[i] for i in exempt]
        if item.foreach:
            torch._foreach_addcdiv_(ps, us, ds, steps)  # type: ignore[arg-type]
        else:
            for p, u, d, step in zip(ps, us, ds, steps):
                p.addcdiv_(u, d, value=step)  # type: ignore[arg-type]
    elif item.foreach:
        torch._foreach_add_(ps, us, alpha=-lr)
    else:
        for p, u in zip(ps, us):
            p.add_(u, alpha=-lr)
