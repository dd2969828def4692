r"""DALS: Discriminative Adaptive Layer Scaling, a layer-and-time aware optimizer (reconstruction).

Source: Yao, Wang, Cui, Chen, Cui, Wang, Wei & Yu, "Learning Rate Engineering: From Coarse Single
Parameter to Layered Evolution", arXiv:2604.27295 (2026). **Only the abstract is public**: DALS
"integrates phase-adaptive cosine scheduling, depth-aware Grokfast gradient filtering, and
LARS-style trust ratios into a single coherent optimizer", with variants DALS, DALS-Fast and a third,
unnamed one. No equations or code are public. **This module is our reconstruction** from those three
named components; every equation below is ours.

For a parameter tensor ``w`` in param group ``l`` at step ``t`` (0-based), with group LR ``eta_l``
(``group["lr"]``, which already includes any LR-map multiplier and is never multiplied by
``lr_multiplier`` again), depth fraction ``d_l = depth_l / max_depth`` (0 = input, 1 = head; 1 for
every group when no group carries a ``depth``) and warmup length ``W`` steps:

1. Phase-adaptive cosine: ``eta(t) = peak * phase_cosine(t)`` (linear warmup over ``W`` steps, then
   cosine to ``min_lr_ratio``; :func:`spectra.optim.schedules.phase_cosine`).
2. Depth-aware Grokfast on the (sign-corrected) gradient ``g``:
   ``h <- a h + (1 - a) g`` from ``h = 0``; after ``n`` updates the EMA holds the weight mass
   ``1 - a^n``, its bias-corrected value is ``h^ = h / (1 - a^n)``, and
   ``g~ = (g + lambda_l(t) h) / (1 + lambda_l(t) (1 - a^n))`` with
   ``lambda_l(t) = lambda (floor + (1 - floor) d_l) [t >= W]``: upper layers get more slow-gradient
   amplification, and the filter is off during warmup (the EMA still accumulates). The effective
   amplification of ``h^`` is ``lambda_l (1 - a^n)``: it ramps in as the EMA fills its memory. The
   denominator (``grokfast_normalize=True``, our addition) keeps the step size when ``g`` and ``h^``
   agree, so switching the filter on after warmup does not multiply an SGD step by ``1 + lambda``;
   ``grokfast_normalize=False`` gives the reference ``g + lambda h``.
3. Base direction ``u`` from ``g~``: momentum SGD (``base="sgd"``, torch ``SGD`` semantics) or Adam
   with bias correction (``base="adam"``, ``u = m^ / (sqrt(v^) + eps)``).
4. LARS-style trust ratio for every tensor with ``ndim >= 2``:
   ``tau = clip(||w|| / (||u|| + eps_t), tau_min, tau_max)`` (``tau = 1`` when either norm is 0),
   normalized across layers, ``tau^ = tau / mean(tau)`` over all such tensors, so the LR keeps its
   meaning; 1-D tensors (biases, norms) are exempt (``tau^ = 1``). Norms are of full tensors.
5. Optional discriminative depth factor ``D_l = xi^(max_depth - depth_l)`` normalized to mean 1 over
   the depths present (``depth_decay=xi``, default 1 = off; an LR map is the preferred source of
   per-layer factors).
6. Update with decoupled decay: ``w <- w (1 - eta_l eta(t) D_l wd) - eta_l eta(t) D_l tau^ u``.
   Each group records ``eta_l eta(t) D_l`` of its last step under ``group["scheduled_lr"]`` (for logs;
   ``group["lr"]`` stays the peak so torch schedulers and LR maps compose).

Open choices and what we chose (see shared research notes, section 6a):

* Base optimizer (SGD or Adam): both; ``base="sgd"`` by default, since "Fixed SGD" also wins from
  scratch in the abstract.
* Does lambda grow or shrink with depth: it grows (``floor=0.25`` at the input, full at the head).
* Grokfast memory: a zero-started EMA whose amplification ramps in with its weight mass, rather
  than the reference ``h_1 = g_1`` (which over-weights the first gradient for ~1/(1-a) steps and
  collapsed fine-tuning runs) or a bias-corrected EMA at full strength from the start (which
  amplifies an average of the first few gradients as if it were the slow component; see ``_filter``).
* Grokfast scale: normalized by ``1 + lambda_l`` (the reference Grokfast pairs with Adam, which is
  scale-free; with the SGD base an unnormalized filter diverged on our toy problems).
* Phases: warmup (Grokfast off) then cosine; no plateau-triggered restarts.
* Trust-ratio clip: yes, ``[0.1, 10]``, fixed over training (not widened mid-training), with no
  weight-decay term in the denominator (the decay is decoupled), then mean-normalized.
* Hyperparameters: Grokfast reference values (a = 0.98, lambda = 2), warmup 5 %, cosine floor 1 %.

Variants (presets in :data:`PRESETS`, registry names ``dals``, ``dals-fast``, ``dals-ft``):

* ``DALS(...)``: the defaults above.
* :meth:`DALS.fast` ("DALS-Fast"): 2 % warmup, schedule peak x2 and a short Grokfast memory
  (a = 0.9). The notes' guess, lambda = 5 with a = 0.98, oscillated on short toy runs, so the speed
  comes from the peak and the shorter EMA. It is a from-scratch variant: on digits-transfer one seed
  in three ends at chance. With mean-normalized trust ratios every layer moves by about the same
  fraction of its norm per step (``eta(t) / mean(tau)``, 8-10 % there), and its 2 % warmup is two
  steps of that 110-step run; the pretrained ReLU body dies in the first epoch. On that seed 10 %
  warmup or no Grokfast trains (93.7 % and 98.2 %); use ``dals`` or ``dals-ft`` to fine-tune.
* :meth:`DALS.finetune` ("DALS-FT", our name for the unnamed third variant): Adam base, 10 %
  warmup, mild depth decay xi = 0.9, lambda = 1. The abstract reports that DALS falters on
  fine-tuning, where adaptive methods excel, and that directional depth biases need pretrained
  features; so the third variant is the fine-tuning one.

With ``schedule=False, grokfast_lamb=0, trust_ratio=False`` DALS is exactly momentum SGD with
decoupled weight decay (``base="sgd"``) or AdamW (``base="adam"``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..errors import ConfigError
from .schedules import phase_cosine, warmup_steps

__all__ = ["DALS", "trust_ratio", "PRESETS"]

#: Keyword overrides of each named variant (see the module docstring).
PRESETS: dict[str, dict[str, Any]] = {
    "dals": {},
    "dals-fast": dict(warmup=0.02, peak_factor=2.0, grokfast_alpha=0.9, depth_decay=1.0),
    "dals-ft": dict(base="adam", warmup=0.1, depth_decay=0.9, grokfast_lamb=1.0),
}

_BACKFILL = dict(grokfast_normalize=True, peak_factor=1.0, depth_decay=1.0, normalize_trust=True, maximize=False,
                 foreach=None, step=0)


def trust_ratio(w_norm: Tensor, u_norm: Tensor, *, clip: tuple[float, float] = (0.1, 10.0),
                eps: float = 1e-8) -> Tensor:
    r"""LARS-style trust ratio ``clip(||w|| / (||u|| + eps), lo, hi)``, 1 where a norm is zero.

    >>> trust_ratio(torch.tensor([2.0, 0.0, 100.0]), torch.tensor([1.0, 3.0, 1.0]), eps=0.0)
    tensor([ 2.,  1., 10.])
    """
    ok = (w_norm > 0) & (u_norm > 0)
    ratio = torch.where(ok, w_norm / (u_norm + eps), torch.ones_like(w_norm))
    return ratio.clamp(clip[0], clip[1])


class DALS(Optimizer):
    """DALS optimizer (reconstruction; the formulas are in the module docstring).

    Args:
        params: parameters or param groups. Groups may carry ``depth`` (int, from
            :func:`spectra.optim.param_groups`) and their own ``lr`` / ``weight_decay``.
        lr: peak learning rate for groups without their own ``lr``.
        total_steps: length of training in optimizer steps (for the cosine schedule).
        warmup: warmup steps (``int``) or fraction of ``total_steps`` (``float``); Grokfast is off
            during warmup.
        base: ``"sgd"`` (momentum SGD direction) or ``"adam"`` (bias-corrected Adam direction).
        momentum, dampening, nesterov: SGD direction options (torch ``SGD`` semantics).
        betas, eps: Adam direction options.
        weight_decay: decoupled weight decay, scaled by the scheduled LR as in AdamW.
        schedule: apply the phase-adaptive cosine schedule (False: constant ``lr * peak_factor``).
        min_lr_ratio: cosine floor as a fraction of the peak.
        peak_factor: multiplier of the whole schedule (DALS-Fast uses 2).
        grokfast_alpha, grokfast_lamb, grokfast_floor: EMA momentum, amplification at the head and
            the fraction of it at the input layer. ``grokfast_lamb=0`` switches the filter off.
        grokfast_normalize: divide the filtered gradient by ``1 + lambda_l`` (keeps the step size).
        trust_ratio: apply the trust ratio to tensors with ``ndim >= 2``.
        trust_clip, trust_eps: clip band and denominator epsilon of the trust ratio.
        normalize_trust: divide trust ratios by their mean over all adapted tensors.
        depth_decay: discriminative factor ``xi`` per depth level below the head (1 = off).
        maximize: maximize the objective.
        foreach: use ``torch._foreach_*`` kernels (default: on when all params are on one CUDA device).
            On CPU the default single-tensor path is the faster one: torch's CPU foreach kernels are a
            loop over tensors too, and they allocate their temporaries, which CPU memory cannot cache.

    Memory: per tensor, the momentum buffer (SGD base) or Adam's two moments, plus the Grokfast
    average ``grokfast_avg`` (with ``grokfast_lamb > 0``). The single-tensor path also keeps one
    scratch buffer the size of the parameters between steps (not saved in ``state_dict``), where the
    foreach path allocates the same amount per step. Step times: ``reports/bench/optim_step.md``.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        >>> opt = DALS(model.parameters(), lr=0.05, total_steps=100)
        >>> model(torch.ones(3, 4)).square().mean().backward(); opt.step()
    """

    def __init__(self, params: Iterable, lr: float = 0.05, *, total_steps: int,
                 warmup: int | float = 0.05, base: str = "sgd", momentum: float = 0.9,
                 dampening: float = 0.0, nesterov: bool = False, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, schedule: bool = True,
                 min_lr_ratio: float = 0.01, peak_factor: float = 1.0, grokfast_alpha: float = 0.98,
                 grokfast_lamb: float = 2.0, grokfast_floor: float = 0.25, grokfast_normalize: bool = True,
                 trust_ratio: bool = True,
                 trust_clip: tuple[float, float] = (0.1, 10.0), trust_eps: float = 1e-8,
                 normalize_trust: bool = True, depth_decay: float = 1.0, maximize: bool = False,
                 foreach: bool | None = None) -> None:
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(f"DALS total_steps must be a positive int, got {total_steps!r}")
        warmup_steps(warmup, total_steps)  # validates
        checks = [
            (isinstance(lr, (int, float)) and lr >= 0.0, "lr", lr),
            (base in ("sgd", "adam"), "base (expected 'sgd' or 'adam')", base),
            (0.0 <= momentum < 1.0, "momentum", momentum),
            (0.0 <= dampening <= 1.0, "dampening", dampening),
            (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0, "betas", betas),
            (eps >= 0.0, "eps", eps),
            (weight_decay >= 0.0, "weight_decay", weight_decay),
            (0.0 <= min_lr_ratio <= 1.0, "min_lr_ratio", min_lr_ratio),
            (peak_factor > 0.0, "peak_factor", peak_factor),
            (0.0 <= grokfast_alpha < 1.0, "grokfast_alpha", grokfast_alpha),
            (grokfast_lamb >= 0.0, "grokfast_lamb", grokfast_lamb),
            (0.0 <= grokfast_floor <= 1.0, "grokfast_floor", grokfast_floor),
            (0.0 < trust_clip[0] <= trust_clip[1], "trust_clip", trust_clip),
            (trust_eps >= 0.0, "trust_eps", trust_eps),
            (depth_decay > 0.0, "depth_decay", depth_decay),
        ]
        for ok, name, value in checks:
            if not ok:
                raise ConfigError(f"invalid DALS {name}: {value!r}")
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ConfigError("DALS nesterov momentum needs momentum > 0 and dampening = 0")
        defaults = dict(
            lr=float(lr), total_steps=total_steps, warmup=warmup, base=base, momentum=momentum,
            dampening=dampening, nesterov=nesterov, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
            schedule=schedule, min_lr_ratio=min_lr_ratio, peak_factor=peak_factor,
            grokfast_alpha=grokfast_alpha, grokfast_lamb=grokfast_lamb, grokfast_floor=grokfast_floor,
            grokfast_normalize=grokfast_normalize, trust_ratio=trust_ratio, trust_clip=tuple(trust_clip),
            trust_eps=trust_eps,
            normalize_trust=normalize_trust, depth_decay=depth_decay, maximize=maximize, foreach=foreach,
            step=0,
        )
        super().__init__(params, defaults)

    @classmethod
    def fast(cls, params: Iterable, lr: float = 0.05, *, total_steps: int, **overrides: Any) -> "DALS":
        """DALS-Fast: 2 % warmup, schedule peak x2, Grokfast EMA a = 0.9 (short memory), no depth decay.

        For training from scratch; its short warmup can kill a pretrained body (module docstring)."""
        return cls(params, lr, total_steps=total_steps, **{**PRESETS["dals-fast"], **overrides})

    @classmethod
    def finetune(cls, params: Iterable, lr: float = 1e-3, *, total_steps: int, **overrides: Any) -> "DALS":
        """DALS-FT (our name for the unnamed third variant): Adam base, 10 % warmup, depth decay 0.9,
        Grokfast lambda 1, for fine-tuning pretrained models."""
        return cls(params, lr, total_steps=total_steps, **{**PRESETS["dals-ft"], **overrides})

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in _BACKFILL.items():
                group.setdefault(key, value)
            for p in group["params"]:  # older state dicts kept the raw EMA h; the state is now h^
                st = self.state.get(p) if hasattr(self, "state") else None
                if st and "grokfast_ema" in st:
                    ema, n = st.pop("grokfast_ema"), st.get("grokfast_steps", 0)
                    st["grokfast_avg"] = ema / (1.0 - group["grokfast_alpha"] ** n) if n else ema

    # -- per-group scalars (python floats: no device syncs) -------------------------------------
    def _depth_terms(self) -> tuple[list[float], list[float]]:
        depths = [g.get("depth") for g in self.param_groups]
        key = (tuple(depths), tuple(g["depth_decay"] for g in self.param_groups))
        cached = getattr(self, "_depth_cache", None)
        if cached is not None and cached[0] == key:
            return cached[1]
        self._depth_cache = (key, self._compute_depth_terms(depths))
        return self._depth_cache[1]

    def _compute_depth_terms(self, depths: list[Any]) -> tuple[list[float], list[float]]:
        known = sorted({int(d) for d in depths if d is not None})
        top = known[-1] if known else 0
        fracs, factors = [], []
        for group, depth in zip(self.param_groups, depths):
            fracs.append(1.0 if depth is None or top == 0 else int(depth) / top)
            xi = group["depth_decay"]
            if depth is None or xi == 1.0:
                factors.append(1.0)
            else:
                mean = sum(xi ** (top - k) for k in known) / len(known)
                factors.append(xi ** (top - int(depth)) / mean)
        return fracs, factors

    @staticmethod
    def _schedule(group: dict[str, Any], t: int, warm: int) -> float:
        if not group["schedule"]:
            return group["peak_factor"]
        return group["peak_factor"] * phase_cosine(t, total_steps=group["total_steps"], warmup=warm,
                                                   min_ratio=group["min_lr_ratio"])

    def _init_group(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor], list[dict]]:
        params, grads, states = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("DALS does not support sparse gradients")
            params.append(p)
            grads.append(p.grad)
            states.append(self.state[p])
        return params, grads, states

    @torch.no_grad()
    def step(self, closure=None):
        """Take one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        fracs, factors = self._depth_terms()
        work = []
        for group, frac, factor in zip(self.param_groups, fracs, factors):
            t = group["step"]
            group["step"] = t + 1
            params, grads, states = self._init_group(group)
            if not params:
                continue
            foreach = group["foreach"]
            if foreach is None:
                foreach = len({p.device for p in params}) == 1 and params[0].is_cuda
            warm = warmup_steps(group["warmup"], group["total_steps"])
            lamb = group["grokfast_lamb"] * (group["grokfast_floor"] + (1 - group["grokfast_floor"]) * frac)
            work.append((group, t, warm, factor, lamb if t >= warm else 0.0, params, grads, states, foreach))
        if not hasattr(self, "_scratch_cache"):
            self._scratch_cache: dict[str, Any] = {}
        scratch = iter(_scratch([(grads, _needs_scratch(group, lamb)) for group, _, _, _, lamb, _, grads, _, foreach
                                 in work if not foreach], self._scratch_cache))
        pending: list[_Pending] = []
        for group, t, warm, factor, lamb, params, grads, states, foreach in work:
            lr_t = group["lr"] * self._schedule(group, t, warm) * factor
            group["scheduled_lr"] = lr_t  # for logging: the LR this step used, before trust ratios
            outs = None if foreach else next(scratch)
            grads = _filter(grads, states, group, lamb, foreach, outs)
            adapt = [bool(group["trust_ratio"]) and p.ndim >= 2 for p in params]
            denoms: list[Tensor | None] | None = None
            coefs: list[float] | None = None
            if group["base"] == "adam":
                updates, denoms, coefs = _adam_direction(grads, states, group, adapt, foreach, outs)
            else:
                updates = _sgd_direction(grads, states, group, foreach, outs)
            pending.append(_Pending(group, lr_t, params, updates, denoms, coefs, adapt, foreach))
        _trust_scales(pending)
        for item in pending:
            _apply(item)
        return loss


@dataclass
class _Pending:
    """One group's step between the direction and the update (filled in by ``_trust_scales``).

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


def _needs_scratch(group: dict[str, Any], lamb: float) -> bool:
    """Whether a single-tensor group writes temporaries (a filtered or negated gradient, Adam's
    denominator, a Nesterov direction)."""
    return group["base"] == "adam" or group["maximize"] or lamb != 0.0 or bool(group["nesterov"])


def _scratch(requests: list[tuple[list[Tensor], bool]], cache: dict[str, Any]) -> list[list[Tensor] | None]:
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


def _filter(grads: list[Tensor], states: list[dict], group: dict[str, Any], lamb: float,
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
        _lerp_([avgs[i] for i in idx], [grads[i] for i in idx], (1.0 - alpha) / (1.0 - alpha ** n), foreach)
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


def _lerp_(targets: list[Tensor], ends: list[Tensor], weight: float, foreach: bool) -> None:
    if foreach:
        torch._foreach_lerp_(targets, ends, weight)
    else:
        for x, e in zip(targets, ends):
            x.lerp_(e, weight)


def _sgd_direction(grads: list[Tensor], states: list[dict], group: dict[str, Any], foreach: bool,
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


def _adam_direction(grads: list[Tensor], states: list[dict], group: dict[str, Any], adapt: list[bool],
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


def _trust_scales(pending: list[_Pending]) -> None:
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
    if any(c != 1.0 for c in coefs):  # ||coef * u|| without touching u
        if home.type == "cpu":
            u_norm = u_norm * torch.tensor(coefs, dtype=acc)
        else:  # per-entry scalars, no host-to-device copy
            u_norm = torch.stack(torch._foreach_mul(list(u_norm.unbind()), coefs))
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
    if any(c != 1.0 for c in coefs):  # the final scale of an Adam-base tensor is coef * tau^
        tau = tau * torch.tensor(coefs, dtype=acc) if home.type == "cpu" else \
            torch.stack(torch._foreach_mul(list(tau.unbind()), coefs))
    same = all(w.device == home for w in ws)
    for (item, i), value in zip(picked, tau.unbind()):
        item.scales.append(value if same else value.to(item.params[i].device))


def _apply(item: _Pending) -> None:
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
