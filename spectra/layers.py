"""Which tensors are layers, how each becomes matrices, and where each sits in depth.

Rules (no module classes are needed, only tensor keys, shapes and dtypes, so the same logic serves
state dicts, safetensors files and live ``nn.Module`` objects):

* 2-D floating tensors are ``linear`` (including Hugging Face ``Conv1D`` stored as (in, out): the
  spectrum does not depend on orientation) or ``embedding`` when the name says so.
* 4-D tensors are ``conv2d`` kernels (out, in, kh, kw): the kh*kw slices of size out x in are pooled
  into one spectrum and every eigenvalue is scaled by 0.5, WeightWatcher's convention.
* 3-D tensors whose name mentions experts are mixture-of-experts stacks (E, a, b): one matrix per
  expert. Other 3-D tensors are ``conv1d`` kernels (out, in, k), pooled over the k positions with the
  same 0.5 scaling as conv2d (WeightWatcher mis-handles these; see research notes).
* 0-D and 1-D tensors are not layers; they are attached to a layer (biases and norm weights follow
  the module they belong to, or the layer before them) so prescriptions can move them together.
* Integer, boolean and quantized tensors are skipped with a reason; buffers (a causal mask, BatchNorm
  statistics: :mod:`spectra.structure` says which tensors are buffers) are skipped with the reason
  ``buffer``.
* When the owning module is known (:mod:`spectra.structure`), its class decides between ``linear``
  (``nn.Linear``, HF ``Conv1D``) and ``embedding`` (``nn.Embedding``) instead of the name.

Depth: embeddings are depth 0, numbered blocks follow in order (``layers.2`` before ``layers.10``),
anything after the last block (head, pooler, final norm's layer) is last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

__all__ = [
    "LayerSpec",
    "NOT_LAYERS",
    "natural_key",
    "module_name",
    "classify",
    "matrices",
    "assign_depths",
    "attach_vectors",
    "EMBEDDING_PATTERN",
    "HEAD_PATTERN",
]

EMBEDDING_PATTERN = re.compile(
    r"(^|[._])(embed|embeds|embedding|embeddings|embed_tokens|word_embeddings|wte|wpe|tok_embeddings"
    r"|position_embeddings|token_type_embeddings|shared|patch_embed|pos_embed)([._]|$)",
    re.IGNORECASE,
)
HEAD_PATTERN = re.compile(
    r"(^|[._])(lm_head|head|heads|classifier|fc_out|output_layer|score|logits|cls|pooler)([._]|$)",
    re.IGNORECASE,
)
EXPERT_PATTERN = re.compile(r"expert", re.IGNORECASE)
BLOCK_CONTAINERS = {
    "layers", "layer", "h", "blocks", "block", "stages", "stage", "levels", "resblocks",
    "transformer_blocks", "decoder_layers", "encoder_layers", "features", "res_blocks",
}
#: Scale applied to conv eigenvalues (lambda), WeightWatcher's ``conv2d_norm`` for pooled kernels.
CONV_EVAL_SCALE = 0.5

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> list:
    """Sort key that orders ``layers.2`` before ``layers.10``.

    >>> sorted(["l.10.w", "l.2.w"], key=natural_key)
    ['l.2.w', 'l.10.w']
    """
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(text)]


def module_name(key: str) -> str:
    """The module path of a parameter key: the key without a trailing ``.weight``.

    >>> module_name("encoder.layer.0.attention.self.query.weight")
    'encoder.layer.0.attention.self.query'
    """
    return key[: -len(".weight")] if key.endswith(".weight") else key


@dataclass(frozen=True)
class LayerSpec:
    """What :func:`classify` decided about one tensor key."""

    key: str
    name: str
    kind: str  # linear | embedding | conv1d | conv2d | expert | vector | buffer | skipped
    shape: tuple[int, ...]
    dtype: str
    reason: str = ""

    @property
    def is_layer(self) -> bool:
        return self.kind not in NOT_LAYERS


#: LayerSpec kinds that are not weight matrices.
NOT_LAYERS = ("vector", "buffer", "skipped")


def classify(key: str, shape: Sequence[int], dtype: torch.dtype | str, *, buffer: bool = False,
             module_kind: str = "") -> LayerSpec:
    """Decide whether ``key`` is a layer, and of which kind, from its name, shape and dtype.

    ``buffer``: the key is a buffer, not a parameter (skipped, reason ``buffer``). ``module_kind``:
    the owning module's kind when known (:func:`spectra.structure.module_kind`); an ``embedding`` or
    ``linear`` module decides a 2-D weight's kind over its name.

    >>> classify("h.0.attn.bias", (1, 1, 8, 8), "float32", buffer=True).reason
    'buffer'
    >>> classify("encoder.relative_attention_bias.weight", (32, 8), "float32", module_kind="embedding").kind
    'embedding'
    """
    shape = tuple(int(s) for s in shape)
    dtype_name = str(dtype).replace("torch.", "")
    name = module_name(key)
    if buffer:
        return LayerSpec(key, name, "buffer", shape, dtype_name, "buffer")
    if len(shape) <= 1:
        return LayerSpec(key, name, "vector", shape, dtype_name)
    if not _is_float_dtype(dtype):
        return LayerSpec(key, name, "skipped", shape, dtype_name,
                         f"non-floating dtype {dtype_name} (buffers and quantized weights are not analyzed)")
    if any(s == 0 for s in shape):
        return LayerSpec(key, name, "skipped", shape, dtype_name, "empty tensor")
    if len(shape) == 2:
        if module_kind in ("embedding", "linear"):
            kind = module_kind
        else:
            kind = "embedding" if EMBEDDING_PATTERN.search(name) else "linear"
        return LayerSpec(key, name, kind, shape, dtype_name)
    if len(shape) == 3:
        kind = "expert" if EXPERT_PATTERN.search(key) else "conv1d"
        return LayerSpec(key, name, kind, shape, dtype_name)
    if len(shape) == 4:
        return LayerSpec(key, name, "conv2d", shape, dtype_name)
    return LayerSpec(key, name, "skipped", shape, dtype_name, f"{len(shape)}-D tensor (no matrix view defined)")


def _is_float_dtype(dtype: torch.dtype | str) -> bool:
    if isinstance(dtype, torch.dtype):
        return dtype.is_floating_point
    return str(dtype).replace("torch.", "").lower() in {
        "float64", "float32", "float16", "bfloat16", "f64", "f32", "f16", "bf16", "double", "float", "half",
    }


def matrices(spec: LayerSpec, tensor: torch.Tensor) -> list[tuple[str, int | None, torch.Tensor, float]]:
    """Matrix views of a layer tensor: ``[(name, expert_index, matrix_batch, eval_scale)]``.

    ``matrix_batch`` is 2-D for one matrix or 3-D (slices, N, M) for pooled conv kernels, whose
    eigenvalues are concatenated into one spectrum and multiplied by ``eval_scale``.
    """
    if spec.kind in ("linear", "embedding"):
        return [(spec.name, None, tensor, 1.0)]
    if spec.kind == "conv2d":
        out_c, in_c, kh, kw = tensor.shape
        slices = tensor.permute(2, 3, 0, 1).reshape(kh * kw, out_c, in_c)
        return [(spec.name, None, slices, CONV_EVAL_SCALE)]
    if spec.kind == "conv1d":
        slices = tensor.permute(2, 0, 1)
        return [(spec.name, None, slices, CONV_EVAL_SCALE)]
    if spec.kind == "expert":
        return [(f"{spec.name}.{e}", e, tensor[e], 1.0) for e in range(tensor.shape[0])]
    raise ValueError(f"{spec.key} is not a layer ({spec.kind})")


def block_key(name: str) -> tuple | None:
    """The block a module belongs to: (prefix, indices) or None when it is in no numbered block.

    >>> block_key("model.layers.3.mlp.down_proj")
    ('model.layers', (3,))
    >>> block_key("encoder.stages.1.blocks.2.attn.qkv")
    ('encoder.stages', (1, 2))
    """
    parts = name.split(".")
    prefix: list[str] = []
    indices: list[int] = []
    first_container: int | None = None
    for i, part in enumerate(parts[:-1]):
        if part.isdigit() and i > 0 and parts[i - 1].lower() in BLOCK_CONTAINERS:
            if first_container is None:
                first_container = i
                prefix = parts[:i]
            indices.append(int(part))
        elif part.lower() == "experts":
            break
    if first_container is None:
        for i, part in enumerate(parts[:-1]):
            if part.isdigit() and i > 0:
                return (".".join(parts[:i]), (int(part),))
        return None
    return (".".join(prefix), tuple(indices))


def assign_depths(names: Sequence[str], kinds: Sequence[str] | None = None) -> dict[str, int]:
    """Depth index for each module name: embeddings 0, numbered blocks 1..L in order, the rest last.

    Modules outside numbered blocks take depth 0 if they come before the first block in checkpoint
    order (a stem convolution) and L + 1 after it (a head, a pooler). Encoder-decoder models keep
    their stacks apart: every block of the first stack comes before any block of the second.

    >>> assign_depths(["emb", "layers.10.fc", "layers.2.fc", "head"], ["embedding", "linear", "linear", "linear"])
    {'emb': 0, 'layers.10.fc': 2, 'layers.2.fc': 1, 'head': 3}
    """
    kinds = list(kinds) if kinds is not None else ["linear"] * len(names)
    prefix_order: dict[str, int] = {}
    keys: dict[str, tuple] = {}
    for name in names:
        key = block_key(name)
        if key is not None:
            prefix_order.setdefault(key[0], len(prefix_order))
            keys[name] = (prefix_order[key[0]], key[1])
    ordered = sorted(set(keys.values()))
    rank = {k: i + 1 for i, k in enumerate(ordered)}
    last = len(ordered) + 1
    depths: dict[str, int] = {}
    seen_block = False
    for name, kind in zip(names, kinds):
        if name in keys:
            depths[name] = rank[keys[name]]
            seen_block = True
        elif kind == "embedding" or (EMBEDDING_PATTERN.search(name) and not HEAD_PATTERN.search(name)):
            depths[name] = 0
        elif HEAD_PATTERN.search(name) or seen_block:
            depths[name] = last
        else:
            depths[name] = 0
    if not ordered:  # no numbered blocks at all: order of appearance is the depth
        layer_names = [n for n, k in zip(names, kinds) if k != "embedding"]
        offset = 1 if any(k == "embedding" for k in kinds) else 0
        for i, name in enumerate(layer_names):
            depths[name] = i + offset
    return depths


def attach_vectors(keys: Sequence[str], layer_names: Iterable[str], vectors: Iterable[str]) -> dict[str, str | None]:
    """Attach each vector (0/1-D parameter) key in ``vectors`` to a layer name, or None.

    ``keys`` is every key in checkpoint order and ``layer_names`` the module names of the layers.
    A bias or norm weight belongs to the layer of its own module when there is one (``fc.bias`` to
    ``fc``); otherwise to the nearest layer under the same parent module, looking back first
    (TempBalance's "a norm follows its conv/linear" rule) then forward; otherwise the nearest layer.

    >>> attach_vectors(["a.fc.weight", "a.fc.bias", "a.ln.weight", "b.fc.weight"], ["a.fc", "b.fc"],
    ...                ["a.fc.bias", "a.ln.weight"])
    {'a.fc.bias': 'a.fc', 'a.ln.weight': 'a.fc'}
    """
    import bisect

    layer_set = set(layer_names)
    vectors = set(vectors)
    at = [module_name(k) if module_name(k) in layer_set else None for k in keys]
    # positions of the layers under each module prefix ("" = every layer), in checkpoint order, so
    # the nearest one before or after a vector is a binary search (a scan per vector was quadratic:
    # minutes for a checkpoint of many small tensors)
    under: dict[str, list[int]] = {}
    for j, name in enumerate(at):
        if name is not None:
            parts = name.split(".")
            for depth in range(len(parts)):
                under.setdefault(".".join(parts[:depth]) + "." if depth else "", []).append(j)

    def nearest(prefix: str, i: int) -> str | None:
        found = under.get(prefix, ())
        before, after = bisect.bisect_left(found, i), bisect.bisect_right(found, i)  # never the key itself
        if before > 0:
            return at[found[before - 1]]
        return at[found[after]] if after < len(found) else None

    result: dict[str, str | None] = {}
    for i, key in enumerate(keys):
        if key not in vectors:
            continue
        owner_mod = key.rsplit(".", 1)[0] if "." in key else ""
        if owner_mod in layer_set:
            result[key] = owner_mod
            continue
        parent = owner_mod.rsplit(".", 1)[0] + "." if "." in owner_mod else ""
        result[key] = nearest(parent, i) or nearest("", i)
    return result
