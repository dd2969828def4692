"""Optimizer registry: every training strategy by name, built on :func:`spectra.optim.param_groups`.

Modelled on timm's ``timm/optim/_optim_factory.py``: each strategy is a frozen :class:`OptimizerInfo`
record in a registry (no if/elif chain), and :func:`create_optimizer` is the one entry point::

    optimizer, scheduler = create_optimizer("dals", model, lr=0.05, total_steps=1000, steps_per_epoch=50)

Every strategy builds its param groups with ``param_groups(model, lrmap, base_lr=lr,
weight_decay=weight_decay)``, so an LR map (``--lrmap``) works with all of them: ``group["lr"]``
already includes the layer multiplier. The scheduler, when one is returned, is a torch
``LRScheduler`` to be stepped once per optimizer step; it scales each group's initial LR, so layer
ratios survive. DALS has its schedule built in and returns no scheduler.

The strategies are the five "generations" of the DALS paper (arXiv:2604.27295): fixed SGD; global
schedules (step, cosine); per-parameter adaptive (Adam, AdamW, RAdam); per-layer (ULMFiT
discriminative fine-tuning, LARS, LAMB); layer-and-time (ULMFiT STLR, Grokfast, Lookahead, DALS).
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.optim import Optimizer

from ..errors import ConfigError
from .dals import DALS, PRESETS
from .grokfast import Grokfast
from .lamb import Lamb
from .lars import Lars
from .lookahead import Lookahead
from .schedules import cosine_scheduler, step_scheduler, stlr_scheduler

__all__ = ["OptimizerInfo", "register_optimizer", "get_optimizer_info", "list_optimizers", "create_optimizer",
           "layer_decay"]

Builder = Callable[..., "tuple[Optimizer, Any]"]


@dataclass(frozen=True)
class OptimizerInfo:
    """One registered training strategy.

    Attributes:
        name: registry key (``spectra retrain --optimizer NAME``).
        description: one line for ``list`` tables and help.
        build: ``build(groups, *, lr, total_steps, steps_per_epoch, **options) -> (optimizer,
            scheduler or None)``; its keyword-only options are the accepted overrides.
        default_lr: a sensible peak LR for small from-scratch models (used when ``lr`` is None).
        schedule: the LR schedule in words (``constant``, ``step``, ``cosine``, ``stlr``, ``built-in``).
        reference: the paper or code the strategy follows.
    """

    name: str
    description: str
    build: Builder = field(repr=False)
    default_lr: float = 1e-3
    schedule: str = "constant"
    reference: str = ""

    @property
    def options(self) -> tuple[str, ...]:
        """Names of the keyword overrides ``create_optimizer`` accepts for this strategy."""
        sig = inspect.signature(self.build)
        fixed = {"lr", "total_steps", "steps_per_epoch"}
        return tuple(n for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY and n not in fixed)


_REGISTRY: dict[str, OptimizerInfo] = {}


def register_optimizer(name: str, description: str, *, default_lr: float = 1e-3, schedule: str = "constant",
                       reference: str = "") -> Callable[[Builder], Builder]:
    """Decorator registering ``build`` under ``name`` (later registrations replace earlier ones)."""

    def deco(build: Builder) -> Builder:
        _REGISTRY[name] = OptimizerInfo(name, description, build, default_lr, schedule, reference)
        return build

    return deco


def list_optimizers(pattern: str | None = None) -> list[str]:
    """Registered names in registration order, optionally filtered by an fnmatch ``pattern``.

    >>> "dals" in list_optimizers() and list_optimizers("sgd*")[0] == "sgd"
    True
    """
    return [n for n in _REGISTRY if pattern is None or fnmatch.fnmatch(n, pattern)]


def get_optimizer_info(name: str) -> OptimizerInfo:
    """The :class:`OptimizerInfo` for ``name``; unknown names raise ConfigError listing valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


def create_optimizer(name: str, model: nn.Module, *, lr: float | None = None, weight_decay: float = 0.0,
                     lrmap: Any = None, total_steps: int, steps_per_epoch: int,
                     **overrides: Any) -> tuple[Optimizer, Any]:
    """Build the strategy ``name`` for ``model``: ``(optimizer, scheduler or None)``.

    Args:
        name: a registered name (:func:`list_optimizers`).
        model: the module to train (its trainable parameters, each in exactly one group).
        lr: peak base LR (``None``: the strategy's ``default_lr``).
        weight_decay: base weight decay (0-D/1-D parameters get none).
        lrmap: an :class:`~spectra.prescribe.LRMap` of per-parameter multipliers, or None.
        total_steps: optimizer steps in the whole run (schedules need it).
        steps_per_epoch: optimizer steps per epoch.
        **overrides: strategy options (see ``get_optimizer_info(name).options``).

    The scheduler, if any, must be stepped once after every optimizer step.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
        >>> opt, sched = create_optimizer("sgd-cosine", model, lr=0.1, total_steps=10, steps_per_epoch=5)
        >>> type(opt).__name__, type(sched).__name__
        ('SGD', 'LambdaLR')
    """
    info = get_optimizer_info(name)
    unknown = sorted(set(overrides) - set(info.options))
    if unknown:
        raise ConfigError(f"optimizer {name!r} does not take {', '.join(unknown)}; "
                          f"its options are: {', '.join(info.options) or '(none)'}")
    for label, value in (("total_steps", total_steps), ("steps_per_epoch", steps_per_epoch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{label} must be a positive int, got {value!r}")
    lr = info.default_lr if lr is None else float(lr)
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr!r}")
    from .param_groups import param_groups

    groups = param_groups(model, lrmap, base_lr=lr, weight_decay=weight_decay)
    return info.build(groups, lr=lr, total_steps=total_steps, steps_per_epoch=steps_per_epoch, **overrides)


def layer_decay(groups: list[dict[str, Any]], factor: float) -> list[dict[str, Any]]:
    r"""ULMFiT discriminative fine-tuning: ``eta^{l-1} = eta^l / factor`` below the top depth.

    Multiplies each group's ``lr`` and ``lr_multiplier`` by ``factor ** -(max_depth - depth)``
    (Howard & Ruder 2018, section 3.2, factor 2.6), so the head keeps the base LR.

    >>> [g["lr"] for g in layer_decay([{"lr": 1.0, "depth": 0}, {"lr": 1.0, "depth": 1}], 2.0)]
    [0.5, 1.0]
    """
    if factor <= 0:
        raise ConfigError(f"layer decay factor must be > 0, got {factor}")
    top = max(int(g.get("depth", 0)) for g in groups)
    for g in groups:
        scale = factor ** -(top - int(g.get("depth", top)))
        g["lr"] = g["lr"] * scale
        g["lr_multiplier"] = g.get("lr_multiplier", 1.0) * scale
    return groups


def _adapt_matrices(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trust-ratio optimizers adapt every >=2-D tensor even where weight decay is 0 (1-D exempt)."""
    for g in groups:
        g["always_adapt"] = True
        g["adapt_1d"] = False
    return groups


# -- generation 1 and 2: SGD with fixed and global schedules ------------------------------------
@register_optimizer("sgd", "fixed-LR SGD with momentum", default_lr=0.05, reference="Robbins & Monro 1951")
def _sgd(groups, *, lr, total_steps, steps_per_epoch, momentum=0.9, nesterov=False):
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov), None


@register_optimizer("sgd-step", "SGD with momentum, LR x0.1 at 50% and 75% of training", default_lr=0.05,
                    schedule="step", reference="He et al. 2016 (step decay)")
def _sgd_step(groups, *, lr, total_steps, steps_per_epoch, momentum=0.9, milestones=(0.5, 0.75), gamma=0.1):
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return opt, step_scheduler(opt, total_steps=total_steps, milestones=milestones, gamma=gamma)


@register_optimizer("sgd-cosine", "SGD with momentum, cosine decay to 0", default_lr=0.05, schedule="cosine",
                    reference="Loshchilov & Hutter 2017 (SGDR, one cycle)")
def _sgd_cosine(groups, *, lr, total_steps, steps_per_epoch, momentum=0.9, warmup=0, min_ratio=0.0):
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return opt, cosine_scheduler(opt, total_steps=total_steps, warmup=warmup, min_ratio=min_ratio)


# -- generation 3: per-parameter adaptive -------------------------------------------------------
@register_optimizer("adam", "Adam (L2 weight decay)", reference="Kingma & Ba 2015")
def _adam(groups, *, lr, total_steps, steps_per_epoch, betas=(0.9, 0.999), eps=1e-8):
    return torch.optim.Adam(groups, lr=lr, betas=betas, eps=eps), None


@register_optimizer("adamw", "AdamW (decoupled weight decay)", reference="Loshchilov & Hutter 2019")
def _adamw(groups, *, lr, total_steps, steps_per_epoch, betas=(0.9, 0.999), eps=1e-8):
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps), None


@register_optimizer("radam", "Rectified Adam", reference="Liu et al. 2020, arXiv:1908.03265")
def _radam(groups, *, lr, total_steps, steps_per_epoch, betas=(0.9, 0.999), eps=1e-8):
    return torch.optim.RAdam(groups, lr=lr, betas=betas, eps=eps), None


# -- generation 4: per-layer ------------------------------------------------------------------------
def _base(groups, lr, base, momentum=0.9):
    if base == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if base == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ConfigError(f"base must be 'adam' or 'sgd', got {base!r}")


@register_optimizer("discriminative", "ULMFiT discriminative fine-tuning: LR / 2.6 per depth level below the head",
                    reference="Howard & Ruder 2018, arXiv:1801.06146")
def _discriminative(groups, *, lr, total_steps, steps_per_epoch, base="adam", decay=2.6):
    return _base(layer_decay(groups, decay), lr, base), None


@register_optimizer("lars", "LARS: momentum SGD with layerwise trust ratio 0.001 ||w|| / ||g||", default_lr=1.0,
                    reference="You et al. 2017, arXiv:1708.03888; timm optim/lars.py")
def _lars(groups, *, lr, total_steps, steps_per_epoch, momentum=0.9, trust_coeff=0.001, trust_clip=False):
    return Lars(_adapt_matrices(groups), lr=lr, momentum=momentum, trust_coeff=trust_coeff,
                trust_clip=trust_clip), None


@register_optimizer("lamb", "LAMB: Adam direction with layerwise trust ratio ||w|| / ||u||", default_lr=5e-3,
                    reference="You et al. 2020, arXiv:1904.00962; timm optim/lamb.py")
def _lamb(groups, *, lr, total_steps, steps_per_epoch, betas=(0.9, 0.999), eps=1e-6, max_grad_norm=1.0,
          trust_clip=False):
    return Lamb(_adapt_matrices(groups), lr=lr, betas=betas, eps=eps, max_grad_norm=max_grad_norm,
                trust_clip=trust_clip), None


# -- generation 5: layer and time ---------------------------------------------------------------------
@register_optimizer("stlr", "ULMFiT: slanted triangular LR + discriminative fine-tuning (/2.6 per depth)",
                    schedule="stlr", reference="Howard & Ruder 2018, arXiv:1801.06146")
def _stlr(groups, *, lr, total_steps, steps_per_epoch, base="adam", decay=2.6, cut_frac=0.1, ratio=32.0):
    opt = _base(layer_decay(groups, decay), lr, base)
    return opt, stlr_scheduler(opt, total_steps=total_steps, cut_frac=cut_frac, ratio=ratio)


@register_optimizer("grokfast", "AdamW on Grokfast-EMA filtered gradients (alpha 0.98, lambda 2)",
                    reference="Lee et al. 2024, arXiv:2405.20233")
def _grokfast(groups, *, lr, total_steps, steps_per_epoch, alpha=0.98, lamb=2.0, betas=(0.9, 0.999)):
    return Grokfast(torch.optim.AdamW(groups, lr=lr, betas=betas), alpha=alpha, lamb=lamb), None


@register_optimizer("lookahead", "Lookahead (k=5, alpha=0.5) over Adam",
                    reference="Zhang et al. 2019, arXiv:1907.08610")
def _lookahead(groups, *, lr, total_steps, steps_per_epoch, k=5, alpha=0.5, betas=(0.9, 0.999)):
    return Lookahead(torch.optim.Adam(groups, lr=lr, betas=betas), k=k, alpha=alpha), None


def _dals_builder(variant: str):
    def build(groups, *, lr, total_steps, steps_per_epoch, **options):
        return DALS(groups, lr, total_steps=total_steps, **{**PRESETS[variant], **options}), None

    # expose DALS's own keyword options as this strategy's overrides
    params = [p for n, p in inspect.signature(DALS.__init__).parameters.items()
              if p.kind is p.KEYWORD_ONLY and n != "total_steps"]
    fixed = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in ("lr", "total_steps", "steps_per_epoch")]
    build.__signature__ = inspect.Signature([inspect.Parameter("groups", inspect.Parameter.POSITIONAL_ONLY)]
                                            + fixed + params)
    return build


register_optimizer("dals", "DALS (reconstruction): phase cosine + depth-aware Grokfast + trust ratio, SGD base",
                   default_lr=0.05, schedule="built-in", reference="arXiv:2604.27295 (abstract only)")(
    _dals_builder("dals"))
register_optimizer("dals-fast", "DALS-Fast: 2% warmup, peak x2, short Grokfast memory (alpha 0.9)", default_lr=0.05,
                   schedule="built-in", reference="arXiv:2604.27295 (abstract only)")(_dals_builder("dals-fast"))
register_optimizer("dals-ft", "DALS-FT (our third variant): Adam base, 10% warmup, depth decay 0.9, for fine-tuning",
                   default_lr=1e-3, schedule="built-in", reference="arXiv:2604.27295 (abstract only)")(
    _dals_builder("dals-ft"))
