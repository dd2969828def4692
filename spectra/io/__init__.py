"""Checkpoint formats -> named tensors, streamed one at a time. No math here.

>>> import torch
>>> from spectra.io import open_checkpoint
>>> with open_checkpoint({"fc.weight": torch.zeros(4, 3)}) as ckpt:
...     for key, tensor in ckpt:
...         print(key, tuple(tensor.shape))
fc.weight (4, 3)
"""

from .base import TensorInfo, dtype_name
from .checkpoint import Checkpoint, iter_tensors, open_checkpoint

__all__ = ["open_checkpoint", "iter_tensors", "Checkpoint", "TensorInfo", "dtype_name"]
