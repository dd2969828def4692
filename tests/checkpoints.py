"""Small real-architecture checkpoints built without transformers, in the architecture's model order.

* :func:`bert_state_dict`: the keys and shapes of a ``BertModel`` (2 blocks, hidden 16), in
  ``named_modules()`` order; :data:`BERT_CONFIG` is its ``config.json``.
* :func:`gpt2_state_dict`: a ``GPT2Model`` as older transformers saved it, with the causal-mask buffers
  ``h.N.attn.bias`` (1, 1, n, n) and ``h.N.attn.masked_bias`` (a scalar); :data:`GPT2_CONFIG` is a
  ``GPT2LMHeadModel`` config for it (model names carry ``transformer.``, the file's do not).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import torch

H, FFN, VOCAB, POS, BLOCKS = 16, 64, 96, 16, 2

BERT_CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": H, "num_hidden_layers": BLOCKS,
               "num_attention_heads": 2, "intermediate_size": FFN, "vocab_size": VOCAB,
               "max_position_embeddings": POS, "type_vocab_size": 2}
GPT2_CONFIG = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": H, "n_layer": BLOCKS,
               "n_head": 2, "n_positions": POS, "vocab_size": VOCAB}


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g) / shape[-1] ** 0.5


def bert_state_dict(seed: int = 0) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()

    def linear(name: str, out: int, inp: int) -> None:
        sd[f"{name}.weight"], sd[f"{name}.bias"] = _randn(g, out, inp), _randn(g, out)

    def norm(name: str) -> None:
        sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.ones(H), torch.zeros(H)

    sd["embeddings.word_embeddings.weight"] = _randn(g, VOCAB, H)
    sd["embeddings.position_embeddings.weight"] = _randn(g, POS, H)
    sd["embeddings.token_type_embeddings.weight"] = _randn(g, 2, H)
    norm("embeddings.LayerNorm")
    for i in range(BLOCKS):
        p = f"encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            linear(f"{p}.attention.self.{proj}", H, H)
        linear(f"{p}.attention.output.dense", H, H)
        norm(f"{p}.attention.output.LayerNorm")
        linear(f"{p}.intermediate.dense", FFN, H)
        linear(f"{p}.output.dense", H, FFN)
        norm(f"{p}.output.LayerNorm")
    linear("pooler.dense", H, H)
    return sd


def gpt2_state_dict(seed: int = 0, *, masks: bool = True) -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()

    def conv1d(name: str, inp: int, out: int) -> None:  # HF Conv1D stores (in, out)
        sd[f"{name}.weight"], sd[f"{name}.bias"] = _randn(g, inp, out), _randn(g, out)

    def norm(name: str) -> None:
        sd[f"{name}.weight"], sd[f"{name}.bias"] = torch.ones(H), torch.zeros(H)

    sd["wte.weight"] = _randn(g, VOCAB, H)
    sd["wpe.weight"] = _randn(g, POS, H)
    for i in range(BLOCKS):
        p = f"h.{i}"
        norm(f"{p}.ln_1")
        if masks:
            sd[f"{p}.attn.bias"] = torch.tril(torch.ones(POS, POS)).view(1, 1, POS, POS)
            sd[f"{p}.attn.masked_bias"] = torch.tensor(-1e4)
        conv1d(f"{p}.attn.c_attn", H, 3 * H)
        conv1d(f"{p}.attn.c_proj", H, H)
        norm(f"{p}.ln_2")
        conv1d(f"{p}.mlp.c_fc", H, FFN)
        conv1d(f"{p}.mlp.c_proj", FFN, H)
    norm("ln_f")
    return sd


def write_hf_dir(path: Path, state_dict, config: dict) -> Path:
    """``state_dict`` as ``model.safetensors`` (keys sorted, as the format stores them) + ``config.json``."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config))
    return path
