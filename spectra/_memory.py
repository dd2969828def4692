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
