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
  amplifies an average of the first few gradients as if it were the slow component; see
  :func:`spectra.optim.dals_step.filter_gradients`).
* Grokfast scale: normalized by ``1 + lambda_l (1 - a^n)`` (the reference Grokfast pairs with Adam, which is
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

from typing import Any, Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ..errors import ConfigError
from .dals_step import (Pending, adam_direction, apply_updates, filter_gradients, needs_scratch,
                        scratch_views, sgd_direction, trust_ratio, trust_scales)
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
            lr_t = group["lr"] * self._schedule(group, t, warm) * factor
            group["scheduled_lr"] = lr_t  # for logging: the LR this step used, before trust ratios
            lamb = group["grokfast_lamb"] * (group["grokfast_floor"] + (1 - group["grokfast_floor"]) * frac)
            work.append((group, lr_t, lamb if t >= warm else 0.0, params, grads, states, foreach))
        scratch = scratch_views([(grads, not foreach and needs_scratch(group, lamb))
                                 for group, _, lamb, _, grads, _, foreach in work],
                                self.__dict__.setdefault("_scratch_cache", {}))
        pending: list[Pending] = []
        for (group, lr_t, lamb, params, grads, states, foreach), outs in zip(work, scratch):
            grads = filter_gradients(grads, states, group, lamb, foreach, outs)
            adapt = [bool(group["trust_ratio"]) and p.ndim >= 2 for p in params]
            denoms: list[Tensor | None] | None = None
            coefs: list[float] | None = None
            if group["base"] == "adam":
                updates, denoms, coefs = adam_direction(grads, states, group, adapt, foreach, outs)
            else:
                updates = sgd_direction(grads, states, group, foreach, outs)
            pending.append(Pending(group, lr_t, params, updates, denoms, coefs, adapt, foreach))
        trust_scales(pending)
        for item in pending:
            apply_updates(item)
        return loss
