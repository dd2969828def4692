"""Training: the Task protocol, built-in tasks, the retrain loop and the strategy benchmark."""

from .task import Task, TaskInfo, accuracy, default_forward, list_tasks, load_task, register_task

__all__ = ["Task", "TaskInfo", "accuracy", "default_forward", "list_tasks", "load_task", "register_task"]
