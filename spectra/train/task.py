"""The Task protocol: what ``spectra retrain``, ``spectra noise`` and the strategy benchmark train on.

A task bundles a freshly built model, train and eval loaders, a loss and a metric. Batches are tuples
of tensors; :meth:`Task.forward` maps ``(model, batch)`` to ``(outputs, targets)``, so a task whose
model takes several inputs (a transformer with an attention mask) only overrides ``forward``.

A task is named on the command line either as a built-in (``synthetic``, ``digits``, ...; see
:func:`spectra.train.tasks.list_tasks`) or as ``package.module:function``, a zero-argument callable
(keyword arguments from ``--task-arg key=value`` are passed through) that returns a :class:`Task`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from ..errors import TaskError

__all__ = ["Task", "load_task", "register_task", "list_tasks", "TASKS", "TaskInfo", "default_forward", "accuracy"]


def default_forward(model: nn.Module, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y) -> (model(x), y)``."""
    inputs, targets = batch[0], batch[-1]
    return model(inputs), targets


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Top-1 accuracy of logits against integer class targets."""
    return float((outputs.argmax(dim=-1) == targets).float().mean().item())


@dataclass
class Task:
    """A model plus its data, loss and metric.

    Attributes:
        name: short name used in run directories and reports.
        model: an ``nn.Module`` built fresh (or loaded pretrained) by the task factory.
        train_loader: iterable of batches (tuples of tensors) for one epoch.
        eval_loader: iterable of batches for evaluation.
        loss_fn: ``loss_fn(outputs, targets) -> scalar tensor`` (mean over the batch).
        metric_fn: ``metric_fn(outputs, targets) -> float`` in [0, 1], higher is better.
        forward: ``forward(model, batch) -> (outputs, targets)``.
        metric_name: label for ``metric_fn`` in logs and reports.
        transformer: True when the model is a transformer whose hidden states can be probed
            (``spectra diff --activations``); ``probe_batches`` then yields probe inputs.
        meta: free-form description (data set, sizes) recorded in run metadata.
    """

    name: str
    model: nn.Module
    train_loader: Iterable
    eval_loader: Iterable
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy
    metric_fn: Callable[[torch.Tensor, torch.Tensor], float] = accuracy
    forward: Callable[[nn.Module, tuple], tuple[torch.Tensor, torch.Tensor]] = default_forward
    metric_name: str = "accuracy"
    transformer: bool = False
    probe_batches: Callable[[], Iterable] | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskInfo:
    name: str
    factory: Callable[..., Task]
    description: str


TASKS: dict[str, TaskInfo] = {}


def register_task(name: str, description: str):
    """Decorator registering a built-in task factory under ``name``."""

    def wrap(factory: Callable[..., Task]) -> Callable[..., Task]:
        TASKS[name] = TaskInfo(name, factory, description)
        return factory

    return wrap


def list_tasks() -> list[TaskInfo]:
    _load_builtins()
    return sorted(TASKS.values(), key=lambda t: t.name)


def _load_builtins() -> None:
    importlib.import_module("spectra.train.tasks")


def load_task(spec: str, **kwargs: Any) -> Task:
    """Build a task from a built-in name or ``package.module:function``.

    Raises:
        TaskError: unknown name (the message lists the built-ins), import failure, or a factory
            that does not return a :class:`Task`.
    """
    _load_builtins()
    if spec in TASKS:
        factory = TASKS[spec].factory
    elif ":" in spec:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise TaskError(f"cannot import task module {module_name!r}: {exc}") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise TaskError(f"{module_name!r} has no callable {attr!r}")
    else:
        names = ", ".join(sorted(TASKS))
        raise TaskError(f"unknown task {spec!r}; built-ins are: {names}; or give package.module:function")
    try:
        task = factory(**kwargs)
    except TypeError as exc:
        raise TaskError(f"task {spec!r} rejected its arguments: {exc}") from None
    if not isinstance(task, Task):
        raise TaskError(f"task {spec!r} returned {type(task).__name__}, expected spectra.train.Task")
    return task
