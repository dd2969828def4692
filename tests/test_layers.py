import pytest
import torch

from spectra.layers import assign_depths, attach_vectors, block_key, classify, matrices, module_name, natural_key


def test_natural_ordering():
    keys = ["layers.10.w", "layers.2.w", "layers.1.w", "emb"]
    assert sorted(keys, key=natural_key) == ["emb", "layers.1.w", "layers.2.w", "layers.10.w"]


def test_module_name_strips_only_weight():
    assert module_name("a.b.weight") == "a.b"
    assert module_name("attn.in_proj_weight") == "attn.in_proj_weight"
    assert module_name("a.b.bias") == "a.b.bias"


@pytest.mark.parametrize(
    "key, shape, dtype, kind",
    [
        ("model.embed_tokens.weight", (1000, 64), torch.float32, "embedding"),
        ("transformer.wte.weight", (1000, 64), torch.float16, "embedding"),
        ("h.0.attn.c_attn.weight", (64, 192), torch.float32, "linear"),  # HF Conv1D (in, out)
        ("features.0.weight", (16, 3, 3, 3), torch.float32, "conv2d"),
        ("conv.weight", (32, 16, 5), torch.float32, "conv1d"),
        ("model.layers.0.mlp.experts.gate_up_proj", (8, 64, 128), torch.bfloat16, "expert"),
        ("ln.weight", (64,), torch.float32, "vector"),
        ("position_ids", (1, 512), torch.int64, "skipped"),
        ("q.weight", (64, 64), torch.int8, "skipped"),
        ("x.weight", (2, 2, 2, 2, 2), torch.float32, "skipped"),
        ("empty.weight", (0, 4), torch.float32, "skipped"),
    ],
)
def test_classify(key, shape, dtype, kind):
    spec = classify(key, shape, dtype)
    assert spec.kind == kind
    if kind == "skipped":
        assert spec.reason


def test_conv2d_view_is_kernel_positions_by_out_by_in_with_half_scale():
    W = torch.randn(8, 3, 2, 2)
    [(name, expert, view, scale)] = matrices(classify("c.weight", W.shape, W.dtype), W)
    assert view.shape == (4, 8, 3)
    assert scale == 0.5
    torch.testing.assert_close(view[1], W[:, :, 0, 1])


def test_expert_stack_gives_one_matrix_per_expert():
    W = torch.randn(3, 8, 16)
    views = matrices(classify("moe.experts.w1", W.shape, W.dtype), W)
    assert [(n, e) for n, e, _, _ in views] == [("moe.experts.w1.0", 0), ("moe.experts.w1.1", 1), ("moe.experts.w1.2", 2)]
    torch.testing.assert_close(views[2][2], W[2])


def test_block_keys():
    assert block_key("model.layers.12.self_attn.q_proj") == ("model.layers", (12,))
    assert block_key("lm_head") is None
    assert block_key("model.layers.3.mlp.experts.7.w1") == ("model.layers", (3,))


def test_depths_embeddings_first_blocks_in_order_head_last():
    names = ["embed", "layers.10.fc", "layers.2.fc", "layers.2.attn", "norm_proj", "lm_head"]
    kinds = ["embedding", "linear", "linear", "linear", "linear", "linear"]
    d = assign_depths(names, kinds)
    assert d == {"embed": 0, "layers.2.fc": 1, "layers.2.attn": 1, "layers.10.fc": 2, "norm_proj": 3, "lm_head": 3}


def test_depths_keep_encoder_and_decoder_stacks_apart():
    names = ["encoder.block.0.q", "encoder.block.1.q", "decoder.block.0.q", "decoder.block.1.q"]
    d = assign_depths(names)
    assert [d[n] for n in names] == [1, 2, 3, 4]


def test_depths_without_numbered_blocks_follow_order():
    d = assign_depths(["fc1", "fc2", "fc3"])
    assert d == {"fc1": 0, "fc2": 1, "fc3": 2}


def test_attach_vectors_same_module_then_parent_then_nearest():
    keys = ["emb.ln.weight", "emb.tok.weight", "b.0.fc.weight", "b.0.fc.bias", "b.0.ln.weight", "final_ln.weight"]
    layers = ["emb.tok", "b.0.fc"]
    vecs = ["emb.ln.weight", "b.0.fc.bias", "b.0.ln.weight", "final_ln.weight"]
    out = attach_vectors(keys, layers, vecs)
    assert out == {
        "emb.ln.weight": "emb.tok",  # same parent, found looking forward
        "b.0.fc.bias": "b.0.fc",  # its own module
        "b.0.ln.weight": "b.0.fc",  # same parent, looking back
        "final_ln.weight": "b.0.fc",  # nearest layer before it
    }
