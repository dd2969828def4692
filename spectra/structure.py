"""Model structure: the order of a checkpoint's tensors, which are buffers, and which module owns each.

A safetensors file stores its tensors sorted by name and a Hugging Face index lists them
alphabetically, so "the first layer" or "the layer before this norm" cannot be read from the keys.
The published LR rules need that order (TempBalance excludes the first and last ``nn.Linear`` of
``named_modules()``), every output should follow it, and buffers (a GPT-2 causal mask stored as
``h.0.attn.bias``) must not be mistaken for weights. :func:`describe` recovers the structure from the
best source the user's environment has, in this order:

1. ``module``: an ``nn.Module`` given to the API: ``named_modules()`` order, its parameters and
   buffers, and each module's class.
2. ``config``: a Hugging Face ``config.json`` next to the weights, with ``transformers`` installed:
   the architecture named in ``config.architectures`` (else ``AutoModel``) is instantiated on the
   meta device (no weights are allocated, nothing is downloaded, no remote code runs) and read as in
   1. Checkpoint keys and model names may differ by one leading prefix (``bert.``, ``model.``).
3. ``stored``: a torch file or in-memory state dict keeps the insertion order ``torch.save`` wrote,
   which is ``named_modules()`` order.
4. ``canonical``: otherwise (a bare ``.safetensors``), a documented canonical order; see
   :func:`canonical_order`.

Keys the structure does not know (no config; or a key the instantiated model does not have, such as
an old GPT-2 file's ``attn.masked_bias``) are buffers when :func:`looks_like_buffer` says so.

>>> st = of_module(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)))
>>> st.order, st.keys[:3], st.is_buffer("1.running_mean"), st.module_kind("0.weight")
('module', ('0.weight', '0.bias', '1.weight'), True, 'linear')
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from .layers import EMBEDDING_PATTERN, HEAD_PATTERN, natural_key

__all__ = ["Structure", "ORDERS", "describe", "of_module", "canonical_order", "looks_like_buffer", "module_kind"]

log = logging.getLogger(__name__)

#: Where an order came from, best first.
ORDERS = ("module", "config", "stored", "canonical")

#: Last key components that name buffers, not parameters (used when no module says which is which).
BUFFER_NAMES = frozenset({
    "masked_bias", "position_ids", "token_type_ids", "running_mean", "running_var", "num_batches_tracked",
    "inv_freq", "cos_cached", "sin_cached", "_float_tensor", "attn_mask", "causal_mask",
})


def looks_like_buffer(key: str, shape: Sequence[int]) -> bool:
    """Name and shape rules for buffers in a checkpoint without a module or config.

    A key is a buffer when its last component is one of :data:`BUFFER_NAMES` (BatchNorm statistics,
    position/token-type id tables, rotary frequency tables, GPT-2's ``masked_bias``), or when it is a
    ``bias`` of two or more dimensions: a bias parameter is 1-D, so ``h.0.attn.bias`` of shape
    (1, 1, n, n) is GPT-2's causal mask.

    >>> looks_like_buffer("h.0.attn.bias", (1, 1, 1024, 1024)), looks_like_buffer("h.0.attn.c_attn.bias", (2304,))
    (True, False)
    """
    last = key.rsplit(".", 1)[-1]
    return last in BUFFER_NAMES or (last == "bias" and len(tuple(shape)) >= 2)


def module_kind(module: torch.nn.Module) -> str:
    """``linear`` (``nn.Linear`` and subclasses, HF ``Conv1D``), ``embedding``, ``conv1d``, ``conv2d``,
    ``batchnorm``, ``norm`` (LayerNorm, GroupNorm, RMSNorm and classes named ``*Norm``) or ``other``."""
    nn = torch.nn
    name = type(module).__name__
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, nn.Linear) or name == "Conv1D":  # HF Conv1D is a Linear stored as (in, out)
        return "linear"
    if isinstance(module, nn.Conv2d):
        return "conv2d"
    if isinstance(module, nn.Conv1d):
        return "conv1d"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batchnorm"
    if isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or name.endswith("Norm"):
        return "norm"
    return "other"


@dataclass(frozen=True)
class Structure:
    """What is known about a checkpoint's model: key order, buffers, owning modules.

    Attributes:
        order: where the order came from, one of :data:`ORDERS`.
        source: one line saying so, for files and logs (``"BertModel from <dir>/config.json"``).
        keys: every checkpoint key, in model order.
        buffers: the keys that are buffers (never fitted, counted as parameters or given a multiplier).
        owners: checkpoint key -> name of the module that owns it (only for keys a module knows).
        kinds: module name -> :func:`module_kind`; types: module name -> class name.
    """

    order: str
    source: str
    keys: tuple[str, ...]
    buffers: frozenset[str] = frozenset()
    owners: Mapping[str, str] = field(default_factory=dict)
    kinds: Mapping[str, str] = field(default_factory=dict)
    types: Mapping[str, str] = field(default_factory=dict)

    def is_buffer(self, key: str) -> bool:
        return key in self.buffers

    def owner(self, key: str) -> str | None:
        """The module that owns ``key``, or None when the structure does not know it."""
        return self.owners.get(key)

    def module_kind(self, key: str) -> str:
        """:func:`module_kind` of the module owning ``key``; empty when unknown."""
        owner = self.owners.get(key)
        return self.kinds.get(owner, "") if owner is not None else ""

    def rank(self) -> dict[str, int]:
        """``{key: position}`` in model order."""
        return {k: i for i, k in enumerate(self.keys)}


# ------------------------------------------------------------------------------- describe


def describe(ckpt: Any) -> Structure:
    """The structure of an open :class:`~spectra.io.Checkpoint` (see the module docstring).

    Uses ``ckpt.module`` (set when it was opened from an ``nn.Module``), a ``config.json`` in
    ``ckpt.directory`` (the checkpoint's directory, or the directory holding the file), and
    ``ckpt.format`` (``torch`` and ``state_dict`` keep insertion order).
    """
    keys = list(ckpt.keys())
    shapes = {k: tuple(ckpt.info(k).shape) for k in keys}
    stored = getattr(ckpt, "format", "") in ("torch", "state_dict", "module")
    fallback = keys if stored else canonical_order(keys)
    module = getattr(ckpt, "module", None)
    if module is not None:
        return _from_model(module, keys, shapes, fallback, "module", f"{type(module).__name__}.named_modules()")
    directory = getattr(ckpt, "directory", None)
    if directory is not None and (Path(directory) / "config.json").is_file():
        structure = _from_config(Path(directory), keys, shapes, fallback)
        if structure is not None:
            return structure
    if stored:
        return _by_rules("stored", "the file's insertion order", keys, shapes)
    return _by_rules("canonical", "no config.json; embeddings, blocks by index, heads (README: Order)", fallback, shapes)


def of_module(module: torch.nn.Module, keys: Sequence[str] | None = None) -> Structure:
    """The structure of a live module; ``keys`` (default: its ``state_dict()`` keys) may differ from
    the module's names by one leading prefix. Cheap: one walk over ``named_modules()``."""
    if keys is None:
        keys = list(module.state_dict(keep_vars=True).keys())
    keys = list(keys)
    return _from_model(module, keys, {k: () for k in keys}, keys, "module", f"{type(module).__name__}.named_modules()")


def _by_rules(order: str, source: str, keys: Sequence[str], shapes: Mapping[str, tuple]) -> Structure:
    return Structure(order=order, source=source, keys=tuple(keys),
                     buffers=frozenset(k for k in keys if looks_like_buffer(k, shapes.get(k, ()))))


# --------------------------------------------------------------------------- from a model


def _walk(model: torch.nn.Module) -> tuple[list[tuple[str, str, bool]], dict[str, str], dict[str, str]]:
    """``[(key, module, is_buffer)]`` in state-dict order (own tensors, then children), and the kind
    and class name of every module that owns a tensor. Non-persistent buffers are included: older
    checkpoints stored them."""
    entries: list[tuple[str, str, bool]] = []
    kinds: dict[str, str] = {}
    types: dict[str, str] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        own = [(p, False) for p, t in mod._parameters.items() if t is not None]
        own += [(b, True) for b, t in mod._buffers.items() if t is not None]
        if not own:
            continue
        kinds[name], types[name] = module_kind(mod), type(mod).__name__
        entries += [(f"{name}.{t}" if name else t, name, is_buffer) for t, is_buffer in own]
    return entries, kinds, types


def _align(model_keys: Sequence[str], ckpt_keys: Iterable[str]) -> tuple[dict[str, str], int]:
    """Model key -> checkpoint key under the one-prefix change that matches the most keys."""
    present = set(ckpt_keys)
    tops_model = {k.split(".", 1)[0] + "." for k in model_keys if "." in k}
    tops_ckpt = {k.split(".", 1)[0] + "." for k in present if "." in k}
    candidates = [("", "")] + [(p, "") for p in sorted(tops_model)] + [("", p) for p in sorted(tops_ckpt)]
    best: tuple[dict[str, str], int] = ({}, -1)
    for strip, add in candidates:
        mapping = {}
        for key in model_keys:
            mapped = add + (key[len(strip):] if strip and key.startswith(strip) else key)
            if mapped in present:
                mapping.setdefault(key, mapped)
        if len(mapping) > best[1]:
            best = (mapping, len(mapping))
            if best[1] == len(present):  # every checkpoint key placed: no other change can do better
                break
    return best


def _merge(fallback: Sequence[str], ranked: Mapping[str, int]) -> list[str]:
    """``fallback`` reordered by ``ranked``; a key without a rank stays right after the ranked key
    before it in ``fallback``."""
    items = []
    last = -1
    for pos, key in enumerate(fallback):
        if key in ranked:
            last = ranked[key]
            items.append((last, 0, pos, key))
        else:
            items.append((last, 1, pos, key))
    return [key for *_, key in sorted(items)]


def _from_model(model: torch.nn.Module, keys: Sequence[str], shapes: Mapping[str, tuple], fallback: Sequence[str],
                order: str, source: str, *, min_match: float = 0.0) -> Structure | None:
    entries, kinds, types = _walk(model)
    mapping, matched = _align([k for k, _, _ in entries], keys)
    if matched < max(1, min_match * len(keys)):
        log.info("%s matches only %d of %d checkpoint keys; not using it", source, max(matched, 0), len(keys))
        return None
    ranked: dict[str, int] = {}
    owners: dict[str, str] = {}
    buffers = set()
    for i, (key, mod, is_buffer) in enumerate(entries):
        ckey = mapping.get(key)
        if ckey is None or ckey in ranked:
            continue  # not in the checkpoint, or a tied tensor already placed
        ranked[ckey], owners[ckey] = i, mod
        if is_buffer:
            buffers.add(ckey)
    buffers.update(k for k in keys if k not in ranked and looks_like_buffer(k, shapes.get(k, ())))
    if matched < len(keys):
        log.debug("%s: %d checkpoint keys are not in the model", source, len(keys) - matched)
    used = {owners[k] for k in owners}
    return Structure(order=order, source=source, keys=tuple(_merge(fallback, ranked)), buffers=frozenset(buffers),
                     owners=owners, kinds={m: kinds[m] for m in used}, types={m: types[m] for m in used})


#: Config fields that multiply the number of modules; a value above the checkpoint's key count is
#: not this checkpoint's config (or a hostile one), and the model is not instantiated. Sizes above
#: _MAX_DIM are refused too (meta tensors cost nothing, but some model code builds tables on the CPU).
_COUNT_FIELDS = ("layer", "depth", "expert", "block")
_SIZE_FIELDS = ("size", "dim", "position", "vocab", "embd", "ctx")
_MAX_DIM = 1 << 24
_MAX_CONFIG_BYTES = 16 << 20


def _config_too_big(data: Any, limit: int) -> str | None:
    if isinstance(data, Mapping):
        for key, value in data.items():
            name = str(key).lower()
            if isinstance(value, int) and not isinstance(value, bool) and (
                    (value > limit and any(f in name for f in _COUNT_FIELDS))
                    or (value > _MAX_DIM and any(f in name for f in _SIZE_FIELDS))):
                return f"{key}={value}"
            found = _config_too_big(value, limit)
            if found:
                return found
    return None


def _from_config(directory: Path, keys: Sequence[str], shapes: Mapping[str, tuple],
                 fallback: Sequence[str]) -> Structure | None:
    """Instantiate the config's architecture on the meta device; None when that is not possible."""
    path = directory / "config.json"
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {_MAX_CONFIG_BYTES >> 20} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
        too_big = _config_too_big(data, max(len(keys), 1))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        log.info("%s: not usable (%s); model order falls back to the file's", path, str(exc)[:200])
        return None
    if too_big:
        log.info("%s: %s exceeds the checkpoint's %d tensors; not instantiating it", path, too_big, len(keys))
        return None
    try:
        import transformers
    except ImportError:
        log.info("%s: transformers is not installed; model order falls back to the file's", path)
        return None
    hf_log = transformers.utils.logging
    verbosity = hf_log.get_verbosity()
    hf_log.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True,
                                                             trust_remote_code=False)
            arch = next(iter(getattr(config, "architectures", None) or ()), None)
            cls = getattr(transformers, str(arch), None) if arch else None
            with torch.device("meta"):
                if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
                    model = cls(config)
                else:
                    model = transformers.AutoModel.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any failure means "no structure", never a crash
        log.info("%s: cannot instantiate the model (%s: %s); model order falls back to the file's",
                 path, type(exc).__name__, str(exc)[:200])
        return None
    finally:
        hf_log.set_verbosity(verbosity)
    return _from_model(model, keys, shapes, fallback, "config", f"{type(model).__name__} from {path}",
                       min_match=0.5)


# ------------------------------------------------------------------------- canonical order

#: Known sibling orders (registration order in the common model families). At each level of the
#: key tree, the sequence sharing the most names with the siblings there orders them.
SIBLING_ORDERS: tuple[tuple[str, ...], ...] = (
    # BERT, RoBERTa, MiniLM (BertModel, BertFor*)
    ("bert", "cls"), ("embeddings", "encoder", "pooler"),
    ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"),
    ("attention", "intermediate", "output"), ("self", "output"), ("query", "key", "value"),
    ("dense", "LayerNorm"), ("bias", "transform", "decoder"),
    # DistilBERT
    ("distilbert", "vocab_transform", "vocab_layer_norm", "vocab_projector"), ("embeddings", "transformer"),
    ("attention", "sa_layer_norm", "ffn", "output_layer_norm"), ("q_lin", "k_lin", "v_lin", "out_lin"),
    ("lin1", "lin2"),
    # GPT-2
    ("transformer", "lm_head"), ("wte", "wpe", "h", "ln_f"),
    ("ln_1", "attn", "ln_2", "crossattention", "ln_cross_attn", "mlp"), ("c_attn", "q_attn", "c_proj"),
    ("c_fc", "c_proj"),
    # LLaMA, Mistral, Qwen, Gemma
    ("model", "lm_head"), ("embed_tokens", "layers", "norm", "rotary_emb"),
    ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
     "post_feedforward_layernorm"),
    ("q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"), ("gate_proj", "up_proj", "down_proj"),
    ("gate", "experts", "shared_expert", "shared_expert_gate"),
    # GPT-NeoX / Pythia
    ("gpt_neox", "lm_head", "embed_out"), ("embed_in", "layers", "final_layer_norm"),
    ("input_layernorm", "post_attention_layernorm", "attention", "mlp"), ("query_key_value", "dense"),
    ("dense_h_to_4h", "dense_4h_to_h"),
    # OPT, BART
    ("embed_tokens", "embed_positions", "final_layer_norm", "layers"), ("k_proj", "v_proj", "q_proj", "out_proj"),
    ("embed_tokens", "embed_positions", "layers", "layernorm_embedding"),
    ("self_attn", "self_attn_layer_norm", "encoder_attn", "encoder_attn_layer_norm", "fc1", "fc2",
     "final_layer_norm"),
    # T5
    ("shared", "encoder", "decoder", "lm_head"), ("embed_tokens", "block", "final_layer_norm"),
    ("SelfAttention", "EncDecAttention", "DenseReluDense", "layer_norm"), ("q", "k", "v", "o", "relative_attention_bias"),
    ("wi", "wi_0", "wi_1", "wo"),
    # ViT (Hugging Face and timm)
    ("embeddings", "layers", "layernorm", "pooler"), ("attention", "layernorm_before", "layernorm_after", "mlp"),
    ("patch_embed", "blocks", "norm", "fc_norm", "head"), ("norm1", "attn", "ls1", "norm2", "mlp", "ls2"),
    ("qkv", "q_norm", "k_norm", "proj"), ("fc1", "fc2"),
    # torchvision ResNet
    ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"),
    ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "downsample"),
    # anything else: stem and embeddings, blocks, final norm, head
    ("stem", "embed", "embedding", "embeddings", "tok_emb", "pos_emb", "blocks", "layers", "h", "norm",
     "ln_f", "final_norm", "head", "lm_head", "classifier", "fc"),
)
#: Order of tensors held directly by one module (parameters before buffers, as ``state_dict()``).
LEAF_ORDER = ("weight", "bias", "gate_up_proj", "down_proj", "cls_token", "reg_token", "pos_embed", "running_mean", "running_var",
              "num_batches_tracked", "masked_bias")


_FRONT = re.compile(r"emb|stem|patch", re.IGNORECASE)


def _sibling_ranks(names: set[str], leaves: set[str]) -> dict[str, tuple]:
    best: tuple[str, ...] = ()
    for seq in SIBLING_ORDERS:  # one shared name is no evidence of a family: at least two
        if len(names.intersection(seq)) > max(1, len(names.intersection(best))):
            best = seq
    ranks = {}
    for name in names:
        if name in leaves:  # a module's own tensors come before its children
            ranks[name] = (0, LEAF_ORDER.index(name) if name in LEAF_ORDER else len(LEAF_ORDER), natural_key(name))
        elif name.isdigit():
            ranks[name] = (2, int(name), [])
        elif name in best:
            ranks[name] = (2, best.index(name), [])
        elif (EMBEDDING_PATTERN.search(name) or _FRONT.search(name)) and not HEAD_PATTERN.search(name):
            ranks[name] = (1, 0, natural_key(name))
        elif HEAD_PATTERN.search(name):
            ranks[name] = (3, 0, natural_key(name))
        else:
            ranks[name] = (2, len(best), natural_key(name))
    return ranks


def canonical_order(keys: Iterable[str]) -> list[str]:
    """The keys in canonical model order, for files that do not store one.

    The keys are sorted as a tree. At each level the siblings are ordered: a module's own tensors
    first (``weight`` before ``bias``, parameters before buffers), then its children: numbered
    children by number, named children in the registration order of the best-matching known family
    (:data:`SIBLING_ORDERS`: BERT, DistilBERT, GPT-2, LLaMA/Mistral/Qwen, GPT-NeoX, OPT/BART, T5,
    ViT), unknown embedding-like names before the rest and head-like names after it, ties in natural
    order. For those families this reproduces ``named_modules()`` order exactly; for others it keeps
    embeddings first, blocks in index order and heads last.

    >>> canonical_order(["encoder.layer.0.output.dense.weight", "pooler.dense.weight",
    ...                  "encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight"])
    ['embeddings.word_embeddings.weight', 'encoder.layer.0.attention.self.query.weight', 'encoder.layer.0.output.dense.weight', 'pooler.dense.weight']
    """
    keys = list(dict.fromkeys(keys))
    parts = [k.split(".") for k in keys]
    children: dict[tuple[str, ...], set[str]] = {}
    leaves: dict[tuple[str, ...], set[str]] = {}
    for p in parts:
        for depth in range(len(p)):
            children.setdefault(tuple(p[:depth]), set()).add(p[depth])
        leaves.setdefault(tuple(p[:-1]), set()).add(p[-1])
    ranks = {parent: _sibling_ranks(names, leaves.get(parent, set())) for parent, names in children.items()}
    order = sorted(range(len(keys)), key=lambda i: [ranks[tuple(parts[i][:d])][parts[i][d]]
                                                    for d in range(len(parts[i]))])
    return [keys[i] for i in order]
