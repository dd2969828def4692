"""The files of a ``spectra retrain`` run directory, written so that a kill at any point leaves them consistent.

::

    run.json                      spectra.run/1 (:class:`RunInfo`): the configuration, then the outcome
    metrics.jsonl                 one :class:`EpochRecord` per line (epoch 0 = before training)
    checkpoints/epoch-0003.safetensors   model weights after each epoch
    state.pt                      optimizer, scheduler, RNG and refit state, and the metrics so far

``state.pt`` is the one commit point. After each epoch the checkpoint is written, then ``state.pt``
(which carries every epoch's metrics record), then ``metrics.jsonl`` is rewritten from that list,
then old checkpoints are pruned; every file is written atomically (:mod:`spectra._files`). A kill
before the ``state.pt`` rename leaves the previous epoch committed (its checkpoint is still there:
pruning happens after the commit); a kill after it leaves the new epoch committed, and ``--resume``
rewrites ``metrics.jsonl`` from the state, so no epoch's record is ever lost or duplicated.

Every corrupt or foreign state is a one-line error (:class:`~spectra.errors.FormatError` or
:class:`~spectra.errors.CheckpointError`) that names the file, never a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .._files import atomic_path, atomic_write
from .._json import JSONError, loads
from .._version import __version__
from ..errors import CheckpointError, ConfigError, FormatError
from ..records import Record, ResultFile, checked

__all__ = ["RUN_SCHEMA", "RunInfo", "EpochRecord", "read_metrics", "write_metrics", "read_state", "save_state",
           "checkpoint_path", "save_checkpoint", "load_checkpoint", "prune_checkpoints", "open_run", "start_run",
           "finish_run", "STATE_KEYS"]

log = logging.getLogger(__name__)

RUN_SCHEMA = "spectra.run/1"
STATUSES = ("running", "complete", "diverged")
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.safetensors$")


@dataclass(frozen=True)
class RunInfo(ResultFile):
    """``run.json``: the settings of a run and, once it ended, its outcome."""

    schema = RUN_SCHEMA

    config: Mapping[str, Any]
    status: str = checked("running", choices=STATUSES)
    created: str = ""
    spectra_version: str = __version__
    metric: str | None = checked(None, omit_none=True)
    task_meta: Mapping[str, Any] | None = checked(None, omit_none=True)
    final_metric: float | None = checked(None, omit_none=True)
    best_metric: float | None = checked(None, omit_none=True)
    epochs_done: int | None = checked(None, ge=0, omit_none=True)
    wall_time: float | None = checked(None, ge=0, omit_none=True)
    last_checkpoint: str | None = checked(None, omit_none=True)
    finished: str | None = checked(None, omit_none=True)


@dataclass(frozen=True)
class EpochRecord(Record):
    """One line of ``metrics.jsonl``."""

    epoch: int = checked(ge=0)
    step: int = checked(ge=0)
    train_loss: float = math.nan
    eval_loss: float = math.nan
    eval_metric: float = math.nan
    lr_min: float = math.nan
    lr_max: float = math.nan
    time: float = checked(0.0, ge=0)
    refits: int = checked(0, ge=0)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ------------------------------------------------------------------------------- metrics


def _check_history(history: Any, where: str) -> list[dict[str, Any]]:
    """The records as dicts, after checking each against :class:`EpochRecord` and their order 0, 1, 2, ..."""
    if not isinstance(history, list):
        raise FormatError(f"{where}: the metrics history is not a list")
    out = []
    for i, rec in enumerate(history):
        try:
            EpochRecord.from_dict(rec)
        except FormatError as exc:
            raise FormatError(f"{where}: metrics record {i}: {exc}") from None
        if rec["epoch"] != i:
            raise FormatError(f"{where}: metrics record {i} is for epoch {rec['epoch']}; records must be epochs 0, 1, 2, ...")
        out.append(dict(rec))
    return out


def read_metrics(run_dir: str | Path, *, strict: bool = False) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``.

    Lenient by default (for live monitoring): reading stops at the first line that does not parse.
    ``strict=True`` raises :class:`~spectra.errors.FormatError` naming the bad line instead (a
    truncated last line, what a crash in the middle of an append leaves, is still ignored).
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        if strict:
            raise FormatError(f"{path}: unreadable ({exc})") from None
        return []
    records = []
    for number, line in enumerate(lines, 1):
        try:
            rec = loads(line)
            EpochRecord.from_dict(rec)
        except (JSONError, FormatError) as exc:
            if strict and number < len(lines):
                raise FormatError(f"{path}: line {number} is not a metrics record ({exc})") from None
            break
        records.append(rec)
    return records


def write_metrics(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` from ``history``, atomically."""
    atomic_write(run_dir / "metrics.jsonl", "".join(json.dumps(dict(h)) + "\n" for h in history))


# ------------------------------------------------------------------------------- state


#: Keys of ``state.pt`` and the types they must hold (``history`` is absent in files of spectra <= 0.1).
STATE_KEYS: dict[str, tuple[type, ...]] = {
    "epoch": (int,), "step": (int,), "wall": (int, float), "optimizer": (dict,), "scheduler": (dict, type(None)),
    "rng": (torch.Tensor,), "cuda_rng": (list, type(None)), "refit": (dict, type(None)),
}


def save_state(run_dir: Path, state: Mapping[str, Any]) -> None:
    """Write ``state.pt`` atomically: the commit point of an epoch."""
    with atomic_path(run_dir / "state.pt") as tmp:
        torch.save(dict(state), tmp)


def read_state(run_dir: Path, epochs: int) -> dict[str, Any] | None:
    """The saved state of the last committed epoch, checked; None when no epoch was committed."""
    path = run_dir / "state.pt"
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise CheckpointError(f"{path}: unreadable ({reason}); delete the run directory to start over") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}, not a spectra run state")
    for key, types in STATE_KEYS.items():
        if key not in state:
            raise CheckpointError(f"{path}: has no {key!r}; not a spectra run state")
        value = state[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise CheckpointError(f"{path}: {key!r} holds a {type(value).__name__}, not a spectra run state")
    if not 1 <= state["epoch"] <= epochs or state["step"] < 0 or not math.isfinite(state["wall"]):
        raise CheckpointError(f"{path}: epoch {state['epoch']}, step {state['step']} do not fit a run of {epochs} epochs")
    if state["rng"].dtype != torch.uint8 or state["rng"].dim() != 1:
        raise CheckpointError(f"{path}: 'rng' is not a torch RNG state")
    if "history" in state:
        state["history"] = _check_history(state["history"], str(path))
        if len(state["history"]) != state["epoch"] + 1:
            raise CheckpointError(f"{path}: holds {len(state['history'])} metrics records for epoch {state['epoch']}")
    return state


# ------------------------------------------------------------------------------- checkpoints


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "checkpoints" / f"epoch-{epoch:04d}.safetensors"


def save_checkpoint(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "producer": f"spectra {__version__}"})


def load_checkpoint(path: Path, model: torch.nn.Module, device: torch.device) -> None:
    """Load a run checkpoint into ``model`` through spectra's validating reader."""
    from ..io import open_checkpoint

    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} is missing")
    with open_checkpoint(path, strip_prefix=False) as ckpt:
        tensors = {key: ckpt.get(key).to(device) for key in ckpt.keys()}
    try:
        model.load_state_dict(tensors)
    except (RuntimeError, KeyError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise CheckpointError(f"{path}: does not fit this task's model ({reason})") from None


def prune_checkpoints(run_dir: Path, committed: int, keep: int) -> None:
    """Delete epoch checkpoints older than the newest ``keep`` up to the committed epoch (0 keeps all)."""
    if keep <= 0:
        return
    for path in (run_dir / "checkpoints").glob("epoch-*.safetensors"):
        match = _EPOCH_FILE.match(path.name)
        if match and int(match.group(1)) <= committed - keep:
            path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------- run.json


def open_run(run_dir: Path, config: Mapping[str, Any], resume: bool, epochs: int) -> dict[str, Any] | None:
    """Check ``run_dir`` before any work; the saved state when resuming a committed run, else None.

    Nothing is written here: a run that fails to start leaves no half-made directory.
    """
    run_json = run_dir / "run.json"
    if not resume:
        if run_json.exists():
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        return None
    if not run_dir.is_dir():
        raise ConfigError(f"--resume: {run_dir} does not exist; drop --resume to start a new run")
    if not run_json.is_file():
        raise ConfigError(f"--resume: {run_dir} holds no run (no run.json); drop --resume to start a new run there")
    previous = RunInfo.from_json(run_json).config
    diff = sorted(k for k in set(previous) | set(config) if json.dumps(previous.get(k), default=str)
                  != json.dumps(config.get(k), default=str))
    if diff:
        detail = "; ".join(f"{k}: run has {previous.get(k)!r}, now {config.get(k)!r}" for k in diff)
        raise ConfigError(f"cannot resume {run_dir} with different settings ({detail})")
    state = read_state(run_dir, epochs)
    if state is None:
        log.info("%s has no finished epoch yet; starting it from the beginning", run_dir)
    return state


def start_run(run_dir: Path, config: Mapping[str, Any]) -> None:
    """Create the run directory and ``run.json`` (status running); a stale state from an unrelated
    earlier run is removed so it can never be resumed into this one."""
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "state.pt").unlink(missing_ok=True)
    RunInfo(config=dict(config), status="running", created=now()).save(run_dir / "run.json")


def finish_run(run_dir: Path, *, status: str, metric: str, task_meta: Mapping[str, Any], final: float,
               best: float, epochs_done: int, wall: float) -> None:
    """Record the outcome in ``run.json``."""
    import dataclasses

    info = RunInfo.from_json(run_dir / "run.json")
    last = checkpoint_path(run_dir, epochs_done)
    info = dataclasses.replace(
        info, status=status, metric=metric, task_meta=dict(task_meta),
        final_metric=final if math.isfinite(final) else None, best_metric=best if math.isfinite(best) else None,
        epochs_done=epochs_done, wall_time=round(wall, 3),
        last_checkpoint=str(last.relative_to(run_dir)) if last.is_file() else None, finished=now())
    info.save(run_dir / "run.json")

