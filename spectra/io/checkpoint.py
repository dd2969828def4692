"""``open_checkpoint``: one interface over every checkpoint format, streaming one tensor at a time.

>>> import torch
>>> with open_checkpoint({"fc.weight": torch.ones(2, 3)}) as ckpt:
...     ckpt.keys(), ckpt.info("fc.weight").dtype
(['fc.weight'], 'float32')

Key names: prefixes that every key shares are removed when they are a DDP ``module.``, a
torch.compile ``_orig_mod.`` or exactly ``model.`` (a Lightning module holding one model); any other
prefix, and ``model.`` when some key lacks it, is part of the module path and kept. The removed
prefix is in :attr:`Checkpoint.stripped_prefix`. A live ``nn.Module`` keeps its own names
(``strip_prefix`` defaults to off for modules) so results map back onto ``named_parameters()``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..layers import natural_key
from .base import Shard, TensorInfo, check_file
from .directory import Layout, resolve_directory
from .safetensors import SafetensorsShard, looks_like_safetensors
from .statedict import MemoryShard, dedupe_tied, extract_state_dict, find_optimizer_state, strip_prefixes
from .torchfile import TORCH_SUFFIXES, TorchShard, load_torch_file

__all__ = ["Checkpoint", "open_checkpoint", "iter_tensors"]

log = logging.getLogger(__name__)


class Checkpoint:
    """Named tensors of one checkpoint, read lazily. Use as a context manager.

    * ``keys()``: tensor keys in file order: stored (insertion) order for torch files, torch shards
      (in file-name order) and state dicts; index order for sharded safetensors; natural order
      ``layers.2`` < ``layers.10`` for safetensors files without an index. Model order is
      :func:`spectra.structure.describe`'s job.
    * ``info(key)``: :class:`TensorInfo` (shape, dtype name) without reading the data.
    * ``get(key)``: the tensor on CPU, read alone.
    * ``for key, tensor in ckpt``: every tensor, one at a time (torch shards one shard at a time).
    * ``optimizer_state()``: the optimizer state dict saved with the weights, or None.
    * ``path``: display string; ``aliases``: ``{tied_key: kept_key}``; ``stripped_prefix``;
      ``format``: 'safetensors', 'torch', 'state_dict' or 'module'.
    * ``module``: the ``nn.Module`` it was opened from, else None; ``directory``: the directory
      holding the weights (where a ``config.json`` would be), else None. :func:`spectra.structure.describe`
      reads these two to put the keys in model order.
    """

    def __init__(
        self,
        shards: list[Shard],
        *,
        path: str,
        format: str,
        order: list[tuple[str, Shard]] | None = None,
        natural: bool = False,
        strip_prefix: bool = True,
        aliases: Mapping[str, str] | None = None,
        optimizer: Any = None,
        module: torch.nn.Module | None = None,
        directory: Path | None = None,
    ) -> None:
        self.path = path
        self.format = format
        self.module = module
        self.directory = directory
        self._shards = shards
        self._optimizer = optimizer
        self._current: Shard | None = None
        entries = order if order is not None else self._collect(shards, natural)
        stored = [key for key, _ in entries]
        if strip_prefix:
            rename, self.stripped_prefix = strip_prefixes(stored)
        else:
            rename, self.stripped_prefix = {k: k for k in stored}, ""
        self._entries: dict[str, tuple[Shard, str]] = {rename[k]: (shard, k) for k, shard in entries}
        raw_aliases = dict(aliases or {})
        for shard in shards:
            raw_aliases.update(getattr(shard, "aliases", {}) or {})
        def public(key: str) -> str:
            return rename.get(key) or key.removeprefix(self.stripped_prefix)

        self.aliases: dict[str, str] = {public(a): public(k) for a, k in raw_aliases.items()}
        if not self._entries:
            raise CheckpointError(f"{path}: holds no tensors")
        if self.stripped_prefix:
            log.info("%s: removed the prefix %r shared by every key", path, self.stripped_prefix)

    @staticmethod
    def _collect(shards: list[Shard], natural: bool) -> list[tuple[str, Shard]]:
        entries: list[tuple[str, Shard]] = []
        owner: dict[str, Shard] = {}
        for shard in shards:
            for key in shard.keys():
                if key in owner:
                    raise CheckpointError(f"{shard.name}: tensor {key!r} is also in {owner[key].name}")
                owner[key] = shard
                entries.append((key, shard))
        if natural:
            entries.sort(key=lambda e: natural_key(e[0]))
        return entries

    # -- reading ---------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def _lookup(self, key: str) -> tuple[Shard, str]:
        try:
            return self._entries[key]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor named {key!r}") from None

    def info(self, key: str) -> TensorInfo:
        shard, stored = self._lookup(key)
        info = shard.info(stored)
        return TensorInfo(key, info.shape, info.dtype)

    def get(self, key: str) -> torch.Tensor:
        """The tensor ``key`` on CPU, to be treated as read-only (copy it before changing it in place).

        Reading from another torch shard releases the previous one."""
        shard, stored = self._lookup(key)
        if self._current is not None and self._current is not shard:
            self._current.release()
        self._current = shard
        return shard.get(stored)

    __getitem__ = get  # so ``dict(ckpt)`` materialises a small checkpoint

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for key in list(self._entries):
            yield key, self.get(key)

    def infos(self) -> list[TensorInfo]:
        """:meth:`info` of every key, in order."""
        return [self.info(k) for k in self._entries]

    def optimizer_state(self) -> dict | None:
        """The optimizer state dict saved with the weights (``optimizer``, ``optimizer_states[0]``,
        ``optim`` keys of a torch file, or a sibling ``optimizer.pt``), or None."""
        source = self._optimizer
        if callable(source):
            source = source()
        return find_optimizer_state(source) if source is not None else None

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        for shard in self._shards:
            shard.close()
        self._current = None

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoint({self.path!r}, format={self.format!r}, tensors={len(self)})"


def open_checkpoint(
    source: Any,
    *,
    trust_pickle: bool = False,
    strip_prefix: bool | None = None,
) -> Checkpoint:
    """Open a checkpoint for streaming reads.

    ``source``: a ``.safetensors`` file; a ``.pt``/``.pth``/``.bin``/``.ckpt`` file (loaded with
    ``torch.load(weights_only=True, mmap=True)``; a full pickle needs ``trust_pickle=True``); a
    directory (Hugging Face single or sharded safetensors, ``pytorch_model*.bin`` shards, a Trainer
    ``checkpoint-<step>/``, or a single torch file); an in-memory state dict (nested mappings and
    training-checkpoint wrappers allowed) or an ``nn.Module``. ``strip_prefix``: remove a
    ``module.``/``_orig_mod.``/``model.`` prefix shared by every key (default: yes, except for
    modules). Raises :class:`~spectra.errors.CheckpointError` with a one-line message.

    >>> with open_checkpoint(torch.nn.Linear(3, 2)) as ckpt:
    ...     [(k, ckpt.info(k).shape) for k in ckpt.keys()]
    [('weight', (2, 3)), ('bias', (2,))]
    """
    if isinstance(source, torch.nn.Module):
        return _from_memory(source, f"<module {type(source).__name__}>", "module",
                            strip_prefix=bool(strip_prefix))
    if isinstance(source, Mapping):
        return _from_memory(source, "<state dict>", "state_dict",
                            strip_prefix=True if strip_prefix is None else strip_prefix)
    if not isinstance(source, (str, os.PathLike)):
        raise CheckpointError(
            f"cannot open a {type(source).__name__} as a checkpoint (expected a path, a state dict or an nn.Module)"
        )
    strip = True if strip_prefix is None else strip_prefix
    path = Path(source).expanduser()
    if path.is_dir():
        return _from_layout(path, resolve_directory(path), trust_pickle=trust_pickle, strip_prefix=strip)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    kind = _file_kind(path)
    sibling = path.parent / "optimizer.pt"
    layout = Layout((path,), kind, None, sibling if sibling.is_file() and sibling != path else None)
    return _from_layout(path, layout, trust_pickle=trust_pickle, strip_prefix=strip)


def iter_tensors(source: Any, **kwargs) -> Iterator[tuple[str, torch.Tensor]]:
    """``(key, tensor)`` for every tensor of ``source``, one at a time; kwargs go to :func:`open_checkpoint`."""
    with open_checkpoint(source, **kwargs) as ckpt:
        yield from ckpt


def _file_kind(path: Path) -> str:
    """'safetensors' or 'torch': ``.safetensors`` by suffix, anything else by its first bytes
    (some repositories ship safetensors data under a ``.bin`` name)."""
    if path.suffix == ".safetensors":
        return "safetensors"
    check_file(path)
    with open(path, "rb") as fh:
        head = fh.read(16)
    if looks_like_safetensors(head):
        return "safetensors"
    if path.suffix in TORCH_SUFFIXES or head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    raise CheckpointError(
        f"{path}: not a checkpoint (neither safetensors nor a torch file; "
        f"expected .safetensors, .pt, .pth, .bin or .ckpt)"
    )


def _from_layout(path: Path, layout: Layout, *, trust_pickle: bool, strip_prefix: bool) -> Checkpoint:
    shards: list[Shard]
    if layout.kind == "safetensors":
        shards = [SafetensorsShard(f) for f in layout.files]
    else:
        shards = []
        for f in layout.files:
            shards.append(TorchShard(f, trust_pickle=trust_pickle))
            if len(layout.files) > 1:
                shards[-1].release()  # one shard in memory at a time
    by_file = {Path(s.name): s for s in shards}
    order = None
    if layout.order is not None:
        order = []
        for key, file in layout.order:
            shard = by_file[file]
            if key not in shard.keys():
                raise CheckpointError(f"{file}: index names tensor {key!r} but the shard does not hold it")
            order.append((key, shard))
        listed = {key for key, _ in layout.order}
        extra = [(k, s) for s in shards for k in s.keys() if k not in listed]
        order.extend(sorted(extra, key=lambda e: natural_key(e[0])))
        if layout.kind == "torch":  # each shard keeps torch.save's insertion order; the index is alphabetical
            ordered_shards = sorted(shards, key=lambda s: natural_key(Path(s.name).name))
            order = [(k, s) for s in ordered_shards for k in s.keys()]

    def optimizer():
        if layout.optimizer is not None:
            return load_torch_file(layout.optimizer, trust_pickle=trust_pickle)
        if layout.kind == "torch" and len(shards) == 1:
            return shards[0].raw()
        return None

    return Checkpoint(
        shards, path=str(path), format=layout.kind, order=order,
        natural=layout.kind == "safetensors", strip_prefix=strip_prefix, optimizer=optimizer,
        directory=path if path.is_dir() else path.parent,
    )


def _from_memory(source: Any, name: str, fmt: str, *, strip_prefix: bool) -> Checkpoint:
    tensors = extract_state_dict(source, name)
    kept, aliases = dedupe_tied(tensors)
    optimizer = None if isinstance(source, torch.nn.Module) else source
    return Checkpoint([MemoryShard(kept, name)], path=name, format=fmt, strip_prefix=strip_prefix,
                      aliases=aliases, optimizer=optimizer,
                      module=source if isinstance(source, torch.nn.Module) else None)
