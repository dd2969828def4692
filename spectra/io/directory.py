"""Which files of a checkpoint directory hold the weights, and in what order.

Looked for in this order (the first that matches wins):

1. ``model.safetensors.index.json`` (Hugging Face sharded safetensors; key order from its
   ``weight_map``), then ``model.safetensors`` or ``model*.safetensors`` shards without an index;
2. ``pytorch_model.bin.index.json``, then ``pytorch_model*.bin`` (legacy Hugging Face);
3. ``adapter_model.safetensors`` / ``adapter_model.bin`` (PEFT/LoRA adapters);
4. any other ``*.safetensors.index.json``, then any ``*.safetensors`` files;
5. exactly one ``.pt``/``.pth``/``.bin``/``.ckpt`` file, not counting Hugging Face Trainer side
   files (``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth``, ``training_args.bin``, ...).

A sibling ``optimizer.pt`` (Hugging Face Trainer ``checkpoint-<step>/``) is where
:meth:`Checkpoint.optimizer_state` looks for the optimizer state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .._json import JSONError, loads
from ..errors import CheckpointError
from ..layers import natural_key
from .safetensors import MAX_HEADER_BYTES
from .torchfile import TORCH_SUFFIXES

__all__ = ["Layout", "resolve_directory", "read_index", "TRAINER_FILES"]

#: Hugging Face Trainer files that sit next to the weights and are not weights.
TRAINER_FILES = {"optimizer.pt", "scheduler.pt", "scaler.pt", "training_args.bin", "rng_state.pth"}
_LOOKED_FOR = (
    "model.safetensors(.index.json), model-*.safetensors, pytorch_model*.bin(.index.json), "
    "adapter_model.safetensors/.bin, *.safetensors, or a single .pt/.pth/.bin/.ckpt file"
)


@dataclass(frozen=True)
class Layout:
    """The weight files of a directory: ``kind`` is 'safetensors' or 'torch'; ``order`` lists
    ``(key, file)`` pairs from an index json, or is None (each file lists its own keys)."""

    files: tuple[Path, ...]
    kind: str
    order: tuple[tuple[str, Path], ...] | None = None
    optimizer: Path | None = None


def _allowed_roots(directory: Path) -> tuple[Path, ...]:
    """Where shard files may live after symlink resolution: the checkpoint directory and, for a
    Hugging Face cache snapshot (``models--org--name/snapshots/<rev>/``), the repository's ``blobs/``
    (the snapshot's files are symlinks into it)."""
    roots = [directory.resolve()]
    if directory.parent.name == "snapshots":
        roots.append((directory.parent.parent / "blobs").resolve())
    return tuple(roots)


def _shard_path(index: Path, key: str, name: str, roots: tuple[Path, ...]) -> Path:
    """The shard file ``name`` of the index, refused unless it stays inside the checkpoint directory."""
    relative = PurePosixPath(name)
    if not name or relative.is_absolute() or ".." in relative.parts or "\\" in name or "\0" in name:
        raise CheckpointError(f"{index}: weight_map entry {key[:200]!r} names {name[:200]!r}; a shard must be a "
                              "file inside the checkpoint directory")
    path = index.parent / relative
    resolved = path.resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise CheckpointError(f"{index}: shard {name[:200]!r} resolves to {resolved}, outside the checkpoint "
                              "directory; refusing to read it")
    return path


def read_index(index: Path) -> tuple[tuple[str, Path], ...]:
    """``(key, shard_path)`` pairs in the order of the index's ``weight_map``; every shard must exist
    and lie inside the index's directory (after resolving symlinks; see :func:`_allowed_roots`)."""
    try:
        size = index.stat().st_size
        if size > MAX_HEADER_BYTES:
            raise CheckpointError(f"{index}: {size:,} bytes is too large for an index file")
        data = loads(index.read_bytes())
    except OSError as exc:
        raise CheckpointError(f"{index}: unreadable index ({exc.strerror or exc})") from None
    except JSONError as exc:
        raise CheckpointError(f"{index}: unreadable index ({exc})") from None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: index has no 'weight_map' of tensor name -> shard file")
    roots = _allowed_roots(index.parent)
    pairs = []
    missing: list[str] = []
    checked: dict[str, Path] = {}
    for key, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CheckpointError(f"{index}: weight_map entry {key[:200]!r} is not a file name")
        path = checked.get(shard)
        if path is None:
            path = checked[shard] = _shard_path(index, key, shard, roots)
            if not path.is_file():
                missing.append(shard)
        pairs.append((str(key), path))
    if missing:
        raise CheckpointError(
            f"{index}: names shard file(s) that do not exist in {index.parent}: {', '.join(missing[:10])}"
        )
    return tuple(pairs)


def _shards_from_index(order: tuple[tuple[str, Path], ...]) -> tuple[Path, ...]:
    return tuple(dict.fromkeys(path for _, path in order))


def _sorted(paths) -> tuple[Path, ...]:
    return tuple(sorted(paths, key=lambda p: natural_key(p.name)))


def resolve_directory(path: Path) -> Layout:
    """Find the weight files in ``path``; CheckpointError listing what was looked for if none."""
    path = Path(path)
    try:
        entries = [p for p in path.iterdir() if p.is_file()]
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot list directory ({exc.strerror or exc})") from None
    names = {p.name: p for p in entries}
    optimizer = names.get("optimizer.pt")

    def layout(files, kind, order=None) -> Layout:
        return Layout(tuple(files), kind, order, optimizer)

    for stem, kind, glob in (
        ("model.safetensors", "safetensors", "model*.safetensors"),
        ("pytorch_model.bin", "torch", "pytorch_model*.bin"),
        ("adapter_model.safetensors", "safetensors", "adapter_model*.safetensors"),
        ("adapter_model.bin", "torch", "adapter_model*.bin"),
    ):
        index = names.get(f"{stem}.index.json")
        if index is not None:
            order = read_index(index)
            return layout(_shards_from_index(order), kind, order)
        if stem in names:
            return layout([names[stem]], kind)
        shards = _sorted(path.glob(glob))
        if shards:
            return layout(shards, kind)
    indexes = _sorted(path.glob("*.safetensors.index.json"))
    if len(indexes) == 1:
        order = read_index(indexes[0])
        return layout(_shards_from_index(order), "safetensors", order)
    safetensors = _sorted(path.glob("*.safetensors"))
    if safetensors:
        return layout(safetensors, "safetensors")
    torch_files = [
        p for p in entries
        if p.suffix in TORCH_SUFFIXES and p.name not in TRAINER_FILES and not p.name.startswith("rng_state")
    ]
    if len(torch_files) == 1:
        return layout(torch_files, "torch")
    if len(torch_files) > 1:
        listed = ", ".join(p.name for p in _sorted(torch_files))
        raise CheckpointError(f"{path}: several torch files and no index ({listed}); pass one file")
    raise CheckpointError(f"{path}: no checkpoint found in directory (looked for {_LOOKED_FOR}){_hint(names)}")


def _hint(names: dict[str, Path]) -> str:
    if ".metadata" in names or any(n.endswith(".distcp") for n in names):
        return (
            "; this looks like a torch.distributed.checkpoint (FSDP) directory: convert it with "
            "torch.distributed.checkpoint.format_utils.dcp_to_torch_save(dir, 'model.pt')"
        )
    if "latest" in names or "zero_to_fp32.py" in names:
        return "; this looks like a DeepSpeed checkpoint: convert it with zero_to_fp32.py first"
    return ""
