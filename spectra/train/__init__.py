"""Training: the Task protocol, built-in tasks, the retrain loop and the strategy benchmark.

>>> from spectra.train import retrain  # doctest: +SKIP
>>> result = retrain("digits", "dals", epochs=5, out="runs/digits-dals")  # doctest: +SKIP
>>> result.final_metric, result.epochs_to(0.9)  # doctest: +SKIP
"""

from .bench import BenchResult, BenchRun, Strategy, list_strategies, run_strategies, write_report
from .loop import RunResult, read_metrics, retrain
from .task import Task, TaskInfo, accuracy, default_forward, list_tasks, load_task, register_task

__all__ = [
    "Task", "TaskInfo", "accuracy", "default_forward", "list_tasks", "load_task", "register_task",
    "retrain", "RunResult", "read_metrics",
    "run_strategies", "write_report", "list_strategies", "Strategy", "BenchRun", "BenchResult",
]
