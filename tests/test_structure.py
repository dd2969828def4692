"""spectra.structure: model order, buffers and owning modules from a module, a config, a file."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from spectra.io import open_checkpoint
from spectra.structure import canonical_order, describe, looks_like_buffer, module_kind, of_module

# tiny configs of the families SIBLING_ORDERS knows: (architecture, config class, config kwargs)
FAMILIES = [
    ("BertModel", "BertConfig", dict(num_hidden_layers=12, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                     vocab_size=50)),
    ("BertForMaskedLM", "BertConfig", dict(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                                           num_attention_heads=2, vocab_size=50)),
    ("DistilBertModel", "DistilBertConfig", dict(n_layers=2, dim=16, hidden_dim=32, n_heads=2, vocab_size=50)),
    ("GPT2LMHeadModel", "GPT2Config", dict(n_layer=12, n_embd=16, n_head=2, vocab_size=50)),
    ("LlamaForCausalLM", "LlamaConfig", dict(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                                             num_attention_heads=2, num_key_value_heads=2, vocab_size=50)),
    ("Qwen2ForCausalLM", "Qwen2Config", dict(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                                             num_attention_heads=2, num_key_value_heads=2, vocab_size=50)),
    ("MixtralForCausalLM", "MixtralConfig", dict(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                                                 num_attention_heads=2, num_key_value_heads=2, vocab_size=50,
                                                 num_local_experts=4)),
    ("GPTNeoXForCausalLM", "GPTNeoXConfig", dict(num_hidden_layers=2, hidden_size=16, intermediate_size=32,
                                                 num_attention_heads=2, vocab_size=50)),
    ("OPTForCausalLM", "OPTConfig", dict(num_hidden_layers=2, hidden_size=16, ffn_dim=32, num_attention_heads=2,
                                         vocab_size=50, word_embed_proj_dim=16)),
    ("BartForConditionalGeneration", "BartConfig", dict(encoder_layers=2, decoder_layers=2, d_model=16,
                                                        encoder_ffn_dim=32, decoder_ffn_dim=32,
                                                        encoder_attention_heads=2, decoder_attention_heads=2,
                                                        vocab_size=50)),
    ("T5ForConditionalGeneration", "T5Config", dict(num_layers=2, d_model=16, d_ff=32, num_heads=2, d_kv=8,
                                                    vocab_size=50)),
    ("ViTModel", "ViTConfig", dict(num_hidden_layers=2, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                   image_size=8, patch_size=4)),
]


def _meta_model(arch: str, config_cls: str, kwargs: dict):
    transformers = pytest.importorskip("transformers")
    config = getattr(transformers, config_cls)(**kwargs)
    with torch.device("meta"):
        return getattr(transformers, arch)(config)


# ------------------------------------------------------------------------------ canonical order


@pytest.mark.parametrize("arch, config_cls, kwargs", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_canonical_order_is_named_modules_order_for_known_families(arch, config_cls, kwargs):
    keys = list(_meta_model(arch, config_cls, kwargs).state_dict())
    assert canonical_order(sorted(keys)) == keys


def test_canonical_order_resnet_and_unknown_names():
    resnet = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
              "bn1.num_batches_tracked", "layer1.0.conv1.weight", "layer1.0.bn1.weight", "layer1.0.conv2.weight",
              "layer1.0.bn2.weight", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight",
              "layer2.0.conv1.weight", "fc.weight", "fc.bias"]
    assert canonical_order(sorted(resnet)) == resnet
    custom = ["tok_emb.weight", "blocks.2.fc.weight", "blocks.2.fc.bias", "blocks.10.fc.weight", "ln_f.weight",
              "head.weight"]
    assert canonical_order(sorted(custom)) == custom


@settings(max_examples=50, deadline=None)
@given(st.permutations(["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
                        "encoder.layer.0.attention.self.query.bias", "encoder.layer.0.output.dense.weight",
                        "encoder.layer.10.attention.self.key.weight", "encoder.layer.2.intermediate.dense.weight",
                        "pooler.dense.weight", "lm_head.weight", "model.norm.weight", "x.y.z"]))
def test_canonical_order_depends_only_on_the_set_of_keys(keys):
    assert canonical_order(keys) == canonical_order(sorted(keys))
    assert sorted(canonical_order(keys)) == sorted(keys)


# ------------------------------------------------------------------------------ buffers


def test_buffer_rules():
    assert looks_like_buffer("h.0.attn.bias", (1, 1, 16, 16))
    assert looks_like_buffer("h.0.attn.masked_bias", ())
    assert looks_like_buffer("bn1.running_mean", (4,)) and looks_like_buffer("bn1.num_batches_tracked", ())
    assert looks_like_buffer("embeddings.position_ids", (1, 512))
    assert not looks_like_buffer("h.0.attn.c_attn.bias", (48,))
    assert not looks_like_buffer("layers.0.mlp.fc1.weight", (32, 16))


def test_module_kinds():
    nn = torch.nn
    assert [module_kind(m) for m in (nn.Linear(2, 2), nn.Embedding(3, 2), nn.Conv2d(1, 1, 3), nn.Conv1d(1, 1, 3),
                                     nn.BatchNorm2d(2), nn.LayerNorm(2), nn.ReLU())] == \
        ["linear", "embedding", "conv2d", "conv1d", "batchnorm", "norm", "other"]


# ------------------------------------------------------------------------------ describe


class Registered(torch.nn.Module):
    """Registration order that is not alphabetical: an embedding named z_, a head named a_."""

    def __init__(self) -> None:
        super().__init__()
        self.z_embed = torch.nn.Embedding(20, 8)
        self.blocks = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.BatchNorm1d(8))
                                          for _ in range(11))
        self.a_head = torch.nn.Linear(8, 3)


def test_describe_a_module():
    model = Registered()
    with open_checkpoint(model) as ckpt:
        st = describe(ckpt)
    assert st.order == "module" and "Registered" in st.source
    assert list(st.keys) == list(model.state_dict())
    assert st.is_buffer("blocks.3.1.running_var") and not st.is_buffer("blocks.3.1.weight")
    assert st.module_kind("z_embed.weight") == "embedding" and st.module_kind("blocks.10.0.bias") == "linear"
    assert st.owner("blocks.10.0.bias") == "blocks.10.0"
    assert of_module(model).keys == st.keys


def test_describe_a_torch_file_keeps_insertion_order(tmp_path):
    sd = Registered().state_dict()
    torch.save(sd, tmp_path / "model.bin")
    with open_checkpoint(tmp_path / "model.bin") as ckpt:
        st = describe(ckpt)
    assert st.order == "stored" and list(st.keys) == list(sd)  # not re-sorted: z_embed first, a_head last
    assert st.is_buffer("blocks.0.1.num_batches_tracked") and not st.is_buffer("blocks.0.0.weight")


def test_sharded_bin_follows_the_shards_not_the_alphabetical_index(tmp_path):
    sd = Registered().state_dict()
    keys = list(sd)
    half = len(keys) // 2
    names = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]
    torch.save(OrderedDict((k, sd[k]) for k in keys[:half]), tmp_path / names[0])
    torch.save(OrderedDict((k, sd[k]) for k in keys[half:]), tmp_path / names[1])
    weight_map = {k: names[0] if i < half else names[1] for i, k in enumerate(keys)}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": dict(sorted(weight_map.items()))}))
    with open_checkpoint(tmp_path) as ckpt:
        assert ckpt.keys() == keys
        assert describe(ckpt).order == "stored"


def test_describe_a_bare_safetensors_file_is_canonical(tmp_path, tiny_state_dict):
    save_file(dict(tiny_state_dict), str(tmp_path / "model.safetensors"))
    with open_checkpoint(tmp_path / "model.safetensors") as ckpt:
        st = describe(ckpt)
    assert st.order == "canonical" and "no config.json" in st.source
    # a module's own tensors before its children's, as state_dict() writes them
    assert st.keys[:2] == ("embeddings.position_ids", "embeddings.word_embeddings.weight")
    assert st.keys[-2:] == ("head.weight", "head.bias")
    assert st.is_buffer("embeddings.position_ids")


def _bert_dir(tmp_path, arch="BertModel", prefix=""):
    """A tiny BertModel's weights (random) as model.safetensors next to its config.json."""
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(num_hidden_layers=2, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                     vocab_size=64, max_position_embeddings=16, architectures=[arch])
    torch.manual_seed(0)
    model = transformers.BertModel(config)
    sd = {prefix + k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(tmp_path / "model.safetensors"))
    config.to_json_file(str(tmp_path / "config.json"))
    return [prefix + k for k in model.state_dict()]


def test_describe_a_hf_directory_instantiates_the_config_on_meta(tmp_path):
    keys = _bert_dir(tmp_path)
    with open_checkpoint(tmp_path) as ckpt:
        st = describe(ckpt)
    assert st.order == "config" and st.source.startswith("BertModel from ")
    assert list(st.keys) == keys
    assert st.module_kind("embeddings.token_type_embeddings.weight") == "embedding"
    assert st.types["encoder.layer.1.attention.self.query"] == "Linear"
    assert st.module_kind("encoder.layer.0.output.LayerNorm.weight") == "norm"


def test_config_architecture_and_checkpoint_may_differ_by_a_prefix(tmp_path):
    """A BertModel checkpoint under a BertForSequenceClassification config: model names carry
    ``bert.``, the checkpoint's do not; the classifier is not in the checkpoint."""
    keys = _bert_dir(tmp_path, arch="BertForSequenceClassification")
    with open_checkpoint(tmp_path) as ckpt:
        st = describe(ckpt)
    assert st.order == "config" and st.source.startswith("BertForSequenceClassification")
    assert list(st.keys) == keys and st.module_kind("pooler.dense.weight") == "linear"


def test_a_config_that_is_not_this_checkpoints_is_not_used(tmp_path, tiny_state_dict):
    save_file(dict(tiny_state_dict), str(tmp_path / "model.safetensors"))
    pytest.importorskip("transformers")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2Model"],
                                                      "n_layer": 2, "n_embd": 16, "n_head": 2}))
    with open_checkpoint(tmp_path) as ckpt:
        assert describe(ckpt).order == "canonical"


@pytest.mark.parametrize("config", [
    {"model_type": "bert", "architectures": ["BertModel"], "num_hidden_layers": 10 ** 9},  # would never finish
    {"model_type": "distilbert", "sinusoidal_pos_embds": True, "max_position_embeddings": 10 ** 12},  # CPU table
    {"model_type": "no-such-model"},
    {"auto_map": {"AutoModel": "evil.Model"}, "model_type": "evil"},  # remote code is never run
    "not json",
    "[" * 100000 + "]" * 100000,  # nested past the recursion limit
])
def test_hostile_or_unknown_configs_fall_back(tmp_path, tiny_state_dict, config):
    save_file(dict(tiny_state_dict), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    with open_checkpoint(tmp_path) as ckpt:
        st = describe(ckpt)
    assert st.order == "canonical" and st.keys[1] == "embeddings.word_embeddings.weight"
