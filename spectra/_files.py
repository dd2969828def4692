"""Writing output files: atomically, checked before the work starts, never over an input.

Every file spectra writes (JSON, CSV, parquet, npz, HTML, PNG, Markdown, checkpoints, run state)
goes through :func:`atomic_path` (or its wrappers :func:`atomic_write` and :func:`atomic_open`):
the content is written to a temporary file in the destination directory, flushed and fsynced,
then renamed over the destination, and the directory is fsynced. A reader sees the old file or
the new one, never half of one; a full disk or a kill in the middle leaves the previous file as
it was. Missing parent directories are created (every command behaves the same).

:func:`check_outputs` runs before any work: it refuses an output that is one of the inputs
(compared after resolving symlinks), the same path given for two outputs, a suffix the command does
not write, and a location that cannot be written (probed by creating a file there).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator, Mapping

from .errors import ConfigError

__all__ = ["atomic_path", "atomic_write", "atomic_open", "check_outputs", "check_output_dir", "same_file"]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_MODE = 0o666 & ~_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - some file systems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - directory fsync is unsupported on some file systems
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsynced and renamed to ``path``.

    The temporary name keeps the suffix (writers such as matplotlib pick the format from it). On
    any exception, a Ctrl-C included, the temporary file is removed and ``path`` is untouched.
    A symlink at ``path`` is followed: its target is replaced, as ``open(path, "w")`` would.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a" / "b.txt"
    >>> with atomic_path(out) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> out.read_text()
    'hello'
    """
    target = Path(path)
    if target.is_symlink():
        target = Path(os.path.realpath(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".partial{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        mode = target.stat().st_mode & 0o7777 if target.exists() else _MODE
        os.chmod(tmp, mode)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open`` for writing, atomically (see :func:`atomic_path`); ``mode`` is ``"w"`` or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically; returns ``Path(path)``."""
    with atomic_open(path, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


# ------------------------------------------------------------------------- checks before work


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True when ``a`` and ``b`` name the same file (hard links and symlinks included)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _probe(directory: Path, shown: Path) -> None:
    """Create and remove a file in ``directory``: the only test that sees read-only mounts and ACLs."""
    try:
        fd, name = tempfile.mkstemp(prefix=".spectra-probe-", dir=directory)
    except OSError as exc:
        raise ConfigError(f"cannot write {shown}: {exc.strerror or exc} ({directory})") from None
    os.close(fd)
    os.unlink(name)


def _check_writable(path: Path) -> None:
    if path.is_dir():
        raise ConfigError(f"cannot write {path}: it is a directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"cannot write {path}: the file is read-only")
    ancestor = path.parent if str(path.parent) else Path(".")
    while not ancestor.exists():
        if ancestor.is_symlink():  # a dangling link: mkdir would fail later
            raise ConfigError(f"cannot write {path}: {ancestor} is a broken symlink")
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"cannot write {path}: {ancestor} is not a directory")
    if ancestor == path.parent:
        _probe(ancestor, path)
    elif not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {path}: cannot create directories in {ancestor} (permission denied)")


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse, before any work, an output directory that is a file or cannot be created or written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file; this command writes a directory there")
    if path.is_dir():
        _probe(path, path)
    else:
        _check_writable(path)


def check_outputs(
    outputs: Mapping[str, str | os.PathLike | None],
    *,
    inputs: Iterable[str | os.PathLike] = (),
    suffixes: Mapping[str, tuple[str, ...]] | None = None,
) -> None:
    """Refuse, before any work, outputs that could not be written or would destroy something.

    ``outputs`` maps an option name (``--out``) to a path (None or ``-`` for stdout are skipped);
    ``inputs`` are every file the command reads; ``suffixes`` maps an option to the suffixes it
    writes. Raises :class:`~spectra.errors.ConfigError` naming the option and the path.

    >>> check_outputs({"--out": "a.json"}, inputs=["a.json"])
    Traceback (most recent call last):
    ...
    spectra.errors.ConfigError: --out a.json is also an input of this command; write the output elsewhere
    """
    inputs = [Path(p) for p in inputs if p is not None]
    seen: dict[str, Path] = {}
    for option, value in outputs.items():
        if value is None or str(value) == "-":
            continue
        path = Path(value)
        allowed = (suffixes or {}).get(option)
        if allowed and path.suffix.lower() not in allowed:
            shown = path.suffix or "no suffix"
            raise ConfigError(f"{option} {path}: this command writes {' or '.join(allowed)} here, not {shown}")
        for source in inputs:
            if same_file(path, source):
                raise ConfigError(f"{option} {path} is also an input of this command; write the output elsewhere")
        for other, earlier in seen.items():
            if same_file(path, earlier):
                raise ConfigError(f"{option} {path} is the same file as {other}; give two different paths")
        seen[option] = path
        _check_writable(path)
