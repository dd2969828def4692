"""Process-level memory policy for long streaming runs (the CLI applies it; the library does not).

glibc's allocator starts by serving large blocks with ``mmap`` and, each time such a block is freed,
raises its mmap threshold to that block's size (up to 32 MiB). After the first layer is freed, the
buffers of every later layer come from the heap, which then holds the whole working set plus
fragmentation. The peak after a few layers is higher than after one: 328 MiB for one Llama-1024
block against 424 MiB for eight, with one thread. Pinning the threshold (``mallopt(M_MMAP_THRESHOLD)``,
which also turns the dynamic adjustment off) keeps every large buffer on ``mmap``, so each freed
layer goes back to the OS and the peak no longer depends on how many layers came before.

This changes the allocator of the whole process, so :func:`spectra.analyze` never does it on its
own: ``spectra`` commands call :func:`limit_heap_growth` at start-up, and a program embedding the
library may call it too.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["limit_heap_growth"]

_log = logging.getLogger(__name__)
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number


def limit_heap_growth(threshold: int = 1 << 20) -> bool:
    """Serve allocations of ``threshold`` bytes and more with mmap (glibc only; else a no-op).

    Returns True when the setting took effect. ``SPECTRA_MALLOC_DEFAULT=1`` in the environment skips it.

    >>> isinstance(limit_heap_growth(), bool)
    True
    """
    if os.environ.get("SPECTRA_MALLOC_DEFAULT") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    _log.debug("mallopt(M_MMAP_THRESHOLD, %d) -> %s", threshold, ok)
    return ok


_MADV_DONTNEED = 4  # Linux


def _madvise():
    """libc's ``madvise`` (Linux only), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_MADVISE = _madvise()
_PAGE = os.sysconf("SC_PAGE_SIZE") if _MADVISE is not None else 4096


def _drop_pages(storage: object, start: int, length: int) -> None:
    # ``storage`` is only held so the mapping outlives this call (the range is never unmapped here)
    if _MADVISE(start, length, _MADV_DONTNEED) != 0:  # pragma: no cover - a failure only costs memory
        _log.debug("madvise(DONTNEED) failed: errno %d", ctypes.get_errno())


def file_mappings(path: str | os.PathLike) -> list[tuple[int, int]]:
    """Address ranges of this process's private (copy-on-write) mappings of the file ``path``.

    Read from ``/proc/self/maps``; empty where that does not exist.
    """
    target = os.path.realpath(path)
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6 and parts[1].endswith("p") and parts[5].rstrip("\n") == target:
                    lo, hi = parts[0].split("-")
                    ranges.append((int(lo, 16), int(hi, 16)))
    except OSError:
        return []
    return ranges


def release_pages_when_dropped(tensor: "torch.Tensor", mappings: list[tuple[int, int]]) -> "torch.Tensor":
    """A view of ``tensor`` whose pages leave RSS when the view is garbage-collected.

    A memory-mapped torch checkpoint (``torch.load(mmap=True)``) keeps every page it has read
    resident, so reading a file tensor by tensor still ends with the whole file in RSS. When the
    returned view dies, the whole pages inside the tensor's bytes are dropped with
    ``madvise(MADV_DONTNEED)``; the mapping stays valid and a later read faults them in again from
    the file. Only done when those bytes lie inside one of ``mappings`` (private file mappings, from
    :func:`file_mappings`): on anonymous memory the same call would zero the pages, so any other
    tensor is returned as is. Linux only.
    """
    import weakref

    if _MADVISE is None or not mappings or tensor.device.type != "cpu" or tensor.numel() == 0:
        return tensor
    if any(st < 0 for st in tensor.stride()):
        return tensor
    extent = 1 + sum((n - 1) * st for n, st in zip(tensor.shape, tensor.stride()))
    begin = tensor.data_ptr()
    end = begin + extent * tensor.element_size()
    if not any(lo <= begin and end <= hi for lo, hi in mappings):
        return tensor
    start = -(-begin // _PAGE) * _PAGE
    stop = end // _PAGE * _PAGE
    if stop <= start:
        return tensor
    view = tensor.detach()
    weakref.finalize(view, _drop_pages, tensor.untyped_storage(), start, stop - start)
    return view
