"""torch files (``.pt``, ``.pth``, ``.bin``, ``.ckpt``): loaded only with ``weights_only=True``.

A checkpoint is untrusted input: unpickling an arbitrary file can run code (CWE-502). Every file is
first loaded with ``torch.load(path, map_location="cpu", weights_only=True, mmap=True)`` (``mmap``
only for the zip format of torch >= 1.6; legacy files cannot be memory-mapped). With ``mmap`` the
tensor bytes stay on disk until read, and :meth:`TorchShard.get` hands out views whose pages leave
RSS again once the caller drops them, so streaming a torch file costs about one tensor of memory,
as a safetensors file does.

When the restricted unpickler refuses a file, spectra lists the globals that block it
(``torch.serialization.get_unsafe_globals_in_checkpoint`` for zip files, a ``pickletools`` scan for
legacy ones; neither executes the pickle) and raises :class:`~spectra.errors.UnsafeCheckpointError`
unless ``trust_pickle=True``, in which case the file is loaded with ``weights_only=False`` and a
pickled module contributes its ``state_dict()``.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .._memory import file_mappings, release_pages_when_dropped
from ..errors import CheckpointError, UnsafeCheckpointError
from .base import TensorInfo, check_file, dtype_name, unreadable_reason
from .statedict import dedupe_tied, extract_state_dict

__all__ = ["load_torch_file", "unsafe_globals", "TorchShard", "TORCH_SUFFIXES"]

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
_SAFE_LEGACY = re.compile(
    r"^(collections\.OrderedDict|torch\._utils\._rebuild_\w+|torch\._tensor\._rebuild_\w+"
    r"|torch\.\w*Storage|torch\.nn\.parameter\.Parameter|torch\.(float|bfloat|int|uint|bool|complex)\w*"
    r"|_codecs\.encode|builtins\.(set|frozenset|bytearray))$"
)
_GLOBAL_IN_MESSAGE = re.compile(r"GLOBAL ([\w.]+)")


def _load(path: Path, *, weights_only: bool, mmap: bool) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # protocol and FutureWarning chatter from torch.load
        return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=mmap)


def load_torch_file(path: Path, *, trust_pickle: bool = False) -> Any:
    """``torch.load`` a file safely: weights only, memory-mapped when the format allows.

    Raises CheckpointError for files that are not torch checkpoints and UnsafeCheckpointError for
    full pickles when ``trust_pickle`` is False.
    """
    path = Path(path)
    check_file(path)
    is_zip = zipfile.is_zipfile(path)
    try:
        return _load(path, weights_only=True, mmap=is_zip)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, KeyError, EOFError, ...
        error = exc
    blocking = unsafe_globals(path, is_zip)
    named = _GLOBAL_IN_MESSAGE.findall(str(error))
    if blocking is None and not named:
        with open(path, "rb") as fh:
            zip_magic = fh.read(4) == b"PK\x03\x04"  # a zip whose central directory is gone
        is_zip = is_zip or zip_magic
        what = "a corrupt or truncated torch file" if is_zip else "not a torch checkpoint or safetensors file"
        if _is_text(path):
            reason = "it looks like a text file"
        elif not is_zip:
            reason = "neither a zip archive nor a pickle"
        else:
            reason = _reason(error)
        raise CheckpointError(f"{path}: {what} ({reason})") from None
    blocking = sorted(set(blocking or []) | set(named))
    if not blocking:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({_reason(error)})") from None
    if not trust_pickle:
        shown = ", ".join(blocking[:8]) + (f" and {len(blocking) - 8} more" if len(blocking) > 8 else "")
        raise UnsafeCheckpointError(
            f"{path}: is a full pickle, not plain weights (it needs {shown}); loading it can run "
            f"arbitrary code, so it was refused. If you made this file yourself, pass --trust-pickle "
            f"(trust_pickle=True), or re-save it with torch.save(model.state_dict(), ...)"
        )
    log.warning("%s: loading a full pickle (trust_pickle=True); it may run code", path)
    try:
        return _load(path, weights_only=False, mmap=is_zip)
    except Exception as exc:
        raise CheckpointError(f"{path}: full pickle load failed ({_reason(exc)})") from None


def _is_text(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(512)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\n\r\t" for c in text)


def _reason(exc: BaseException) -> str:
    text = str(exc)
    match = re.search(r"WeightsUnpickler error:\s*(.+?)(\n\n|$)", text, re.S)
    if match:
        text = match.group(1)
    text = " ".join(text.split())
    if isinstance(exc, (KeyError, IndexError, EOFError)) or not text:
        text = f"{type(exc).__name__} {text}".strip()
    if len(text) > 120:  # torch's messages run on; the first sentence names the problem
        text = text.split(". ")[0]
    return text[:200]


def unsafe_globals(path: Path, is_zip: bool) -> list[str] | None:
    """Globals in the pickle that the weights-only unpickler refuses, without executing anything.

    Returns None when the file is not a (torch) pickle at all.
    """
    if is_zip:
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        except Exception:
            return None
    found = _scan_pickle_globals(path)
    if found is None:
        return None
    return [g for g in found if not _SAFE_LEGACY.match(g)]


def _scan_pickle_globals(path: Path, max_bytes: int = 64 << 20) -> list[str] | None:
    """Globals named by the consecutive pickles at the start of a legacy file (pickletools only)."""
    with open(path, "rb") as fh:
        stream = io.BytesIO(fh.read(max_bytes))
    found: list[str] = []
    pickles = 0
    while True:
        strings: list[str] = []
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                    found.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
        except (ValueError, pickle.UnpicklingError, EOFError, IndexError, KeyError, UnicodeDecodeError):
            return found if pickles else None
        pickles += 1
        if stream.tell() >= len(stream.getbuffer()):
            return found


class TorchShard:
    """One torch file. Loaded (memory-mapped) when first needed; :meth:`release` drops it."""

    def __init__(self, path: Path, *, trust_pickle: bool = False) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.trust_pickle = trust_pickle
        self._tensors: dict[str, torch.Tensor] | None = None
        self._mappings: list[tuple[int, int]] = []
        self.aliases: dict[str, str] = {}
        self._load()
        self._infos = {
            k: TensorInfo(k, tuple(t.shape), dtype_name(t.dtype)) for k, t in self._tensors.items()
        }

    def _load(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            obj = load_torch_file(self.path, trust_pickle=self.trust_pickle)
            tensors = extract_state_dict(obj, str(self.path))
            self._tensors, self.aliases = dedupe_tied(tensors)
            self._mappings = file_mappings(self.path)
            log.debug("loaded %s (%d tensors)", self.path, len(self._tensors))
        return self._tensors

    def keys(self) -> list[str]:
        return list(self._infos)

    def info(self, key: str) -> TensorInfo:
        return self._infos[key]

    def get(self, key: str) -> torch.Tensor:
        """The tensor; when it lies in the file's memory map, a view whose pages are released from
        RSS once the caller drops it (:func:`spectra._memory.release_pages_when_dropped`). Treat it
        as read-only: an in-place change to a memory-mapped tensor does not survive that release."""
        tensor = self._load()[key]
        reason = unreadable_reason(tensor)
        if reason is not None:
            raise CheckpointError(f"{self.path}: tensor {key[:200]!r} is {reason}")
        return release_pages_when_dropped(tensor, self._mappings)

    def release(self) -> None:
        self._tensors = None

    def close(self) -> None:
        self._tensors = None

    def raw(self) -> Any:
        """The whole loaded object (weights, optimizer, epoch, ...), for optimizer lookup."""
        return load_torch_file(self.path, trust_pickle=self.trust_pickle)
