"""spectra.diff on constructed checkpoint pairs: known update geometry, mismatches, activations."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from spectra.core.esd import eigenvalues
from spectra.core.powerlaw import fit_power_law
from spectra.diff import DIFF_SCHEMA, DiffResult, activation_diff, diff, find_blocks
from spectra.errors import ConfigError, FormatError
from spectra.train.task import Task


def _orth(n, k, gen):
    return torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))[0]


def _pair():
    gen = torch.Generator().manual_seed(0)
    u, v = _orth(20, 12, gen), _orth(12, 12, gen)
    w1 = (u @ torch.diag(torch.linspace(5, 1, 12, dtype=torch.float64)) @ v.T).float()
    a = {
        "embed.weight": torch.randn(30, 12, generator=gen),
        "layers.0.fc.weight": torch.randn(20, 12, generator=gen),
        "layers.0.fc.bias": torch.randn(20, generator=gen),
        "layers.1.fc.weight": w1,
        "layers.1.conv.weight": torch.randn(6, 3, 3, 3, generator=gen),
        "layers.1.experts.w": torch.randn(2, 5, 4, generator=gen),
        "head.weight": torch.randn(4, 20, generator=gen),
        "resized.weight": torch.randn(3, 3, generator=gen),
        "gone.weight": torch.randn(2, 2, generator=gen),
        "steps": torch.tensor([1, 2, 3]),
    }
    b = {k: v.clone() for k, v in a.items() if k != "gone.weight"}
    b["layers.0.fc.weight"] += 0.1 * torch.outer(torch.randn(20, generator=gen), torch.randn(12, generator=gen))
    b["layers.0.fc.bias"] *= 1.5
    b["layers.1.fc.weight"] += (0.3 * u[:, :3] @ v[:, :3].T).float()  # inside W's top-3 subspace
    b["layers.1.conv.weight"] *= 1.2
    b["layers.1.experts.w"][1] *= 2.0
    b["head.weight"] += 0.05 * torch.randn(4, 20, generator=gen)
    b["resized.weight"] = torch.randn(4, 3, generator=gen)
    b["new.weight"] = torch.randn(2, 2, generator=gen)
    return a, b


def test_constructed_updates():
    a, b = _pair()
    r = diff(a, b, topk=3, alpha=False, device="cpu")
    rank1 = r.layer("layers.0.fc")
    assert rank1.dw_stable_rank == pytest.approx(1.0, abs=1e-5)
    assert rank1.dw_effective_rank == pytest.approx(1.0, abs=1e-3)
    d = (b["layers.0.fc.weight"] - a["layers.0.fc.weight"]).double()
    assert rank1.rel_update == pytest.approx(float(d.norm() / a["layers.0.fc.weight"].double().norm()), rel=1e-6)
    assert (rank1.dw_rank, rank1.dw_k, rank1.topk) == (1, 1, 3)  # float32 rounding of W_B is not a direction
    top = r.layer("layers.1.fc")
    assert top.subspace_overlap == pytest.approx(1.0, abs=1e-5)
    assert top.overlap_baseline == pytest.approx((3 / 20 + 3 / 12) / 2)
    assert (top.dw_rank, top.dw_k) == (3, 3)
    assert top.sv_growth == pytest.approx(0.3 / 5, rel=1e-4)
    conv = r.layer("layers.1.conv")
    assert conv.rel_update == pytest.approx(0.2, rel=1e-5) and conv.shape == (6, 3, 3, 3)
    assert r.layer("layers.1.experts.w.0").rel_update == 0.0
    assert r.layer("layers.1.experts.w.1").rel_update == pytest.approx(1.0, rel=1e-6)
    bias, = (v for v in r.vectors if v["param"] == "layers.0.fc.bias")
    assert bias["layer"] == "layers.0.fc" and bias["rel_update"] == pytest.approx(0.5, rel=1e-6)
    assert "layers.0.fc.bias" not in {rec.param for rec in r.layers}
    steps = r.layer("steps")
    assert steps.status == "skipped" and "non-floating" in steps.reason
    # depths follow analyze's rules, biases take their layer's depth
    assert (r.layer("embed").depth, rank1.depth, top.depth, r.layer("head").depth) == (0, 1, 2, 3)
    assert bias["depth"] == 1


def test_merged_lora_delta_through_diff(tmp_path):
    """A rank-4 LoRA delta merged into float32 safetensors weights: aligned with W_A's top directions."""
    gen = torch.Generator().manual_seed(7)
    u, v = _orth(96, 64, gen), _orth(64, 64, gen)
    w = (u @ torch.diag(torch.logspace(1, -1, 64, dtype=torch.float64)) @ v.T).float()
    delta = u[:, :4] @ torch.diag(torch.tensor([0.5, 0.4, 0.3, 0.2], dtype=torch.float64)) @ v[:, :4].T
    save_file({"q.weight": w}, tmp_path / "a.safetensors")
    save_file({"q.weight": (w.double() + delta).float()}, tmp_path / "b.safetensors")
    rec = diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors", topk=10, alpha=False, device="cpu").layer("q")
    assert (rec.dw_rank, rec.dw_k, rec.topk) == (4, 4, 10)
    assert rec.subspace_overlap >= 0.99 and rec.overlap_baseline == pytest.approx((10 / 96 + 10 / 64) / 2)
    assert rec.to_dict()["dw_rank"] == 4


def test_mismatches_are_reported_not_fatal():
    a, b = _pair()
    r = diff(a, b, alpha=False, device="cpu")
    got = {m["param"]: m["reason"] for m in r.mismatched}
    assert got["gone.weight"] == "only in A" and got["new.weight"] == "only in B"
    assert "(3, 3) in A" in got["resized.weight"]
    assert r.summary["num_mismatched"] == 3
    assert all(rec.param != "resized.weight" for rec in r.layers)


def test_summary_and_by_depth():
    a, b = _pair()
    r = diff(a, b, topk=2, alpha=False, device="cpu")
    ok = [x for x in r.layers if x.status == "success"]
    sq_d = sum(x.norm_dw ** 2 for x in ok)
    sq_a = sum(x.norm_a ** 2 for x in ok)
    assert r.summary["rel_update_global"] == pytest.approx(math.sqrt(sq_d / sq_a))
    assert r.summary["rel_update_max_layer"] == "layers.1.experts.w.1"
    depth2 = next(row for row in r.by_depth if row["depth"] == 2)
    members = [x for x in ok if x.depth == 2]
    assert depth2["layers"] == len(members) == 4
    assert depth2["rel_update"] == pytest.approx(sum(x.rel_update for x in members) / 4)
    assert [row["depth"] for row in r.by_depth] == sorted(row["depth"] for row in r.by_depth)


def test_alpha_change_matches_direct_fit():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(120, 80, generator=gen)
    heavy = w + 3 * torch.randn(120, 80, generator=gen).pow(3) / 10
    r = diff({"fc.weight": w}, {"fc.weight": heavy}, device="cpu")
    rec = r.layer("fc")
    expect_a = fit_power_law(eigenvalues(w)).alpha
    expect_b = fit_power_law(eigenvalues(heavy)).alpha
    assert rec.alpha_a == pytest.approx(expect_a) and rec.alpha_b == pytest.approx(expect_b)
    assert rec.delta_alpha == pytest.approx(expect_b - expect_a)
    assert r.config["alpha"] is True


def test_streams_files_and_round_trips_json(tmp_path):
    a, b = _pair()
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    r = diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors", alpha=False, device="cpu")
    assert r.a.endswith("a.safetensors") and r.b.endswith("b.safetensors")
    out = tmp_path / "diff.json"
    r.to_json(out)
    assert "NaN" not in out.read_text()
    back = DiffResult.from_json(out)
    assert back.to_dict()["schema"] == DIFF_SCHEMA
    assert back.layer("layers.0.fc").dw_stable_rank == pytest.approx(r.layer("layers.0.fc").dw_stable_rank)
    assert back.vectors[0]["param"] == "layers.0.fc.bias"
    assert math.isnan(back.layer("steps").dw_stable_rank)
    assert back.layer("layers.1.conv").shape == (6, 3, 3, 3)
    with pytest.raises(FormatError):
        DiffResult.from_dict({"schema": "spectra.noise/1"})


def test_bad_topk():
    with pytest.raises(ConfigError, match="--topk"):
        diff({"w.weight": torch.eye(2)}, {"w.weight": torch.eye(2)}, topk=0)


# ------------------------------------------------------------------ activations


class ToyBlock(nn.Module):
    """Either h + h * diag(W) (purely tokenwise) or h + W (mean of the *other* tokens) (context only)."""

    def __init__(self, d, mixing: bool):
        super().__init__()
        self.mixing = mixing
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, h):
        if not self.mixing:
            return h + h * torch.diagonal(self.proj.weight)
        t = h.shape[1]
        others = (h.sum(1, keepdim=True) - h) / (t - 1)
        return h + self.proj(others.roll(1, dims=1))


class ToyTransformer(nn.Module):
    def __init__(self, d=8, vocab=50):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([ToyBlock(d, mixing=False), ToyBlock(d, mixing=True)])
        self.head = nn.Linear(d, 2)

    def forward(self, ids):
        h = self.embed(ids)
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(1))


def make_toy_task() -> Task:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (16, 12), generator=gen)
    y = torch.randint(0, 2, (16,), generator=gen)
    batches = [(ids[:8], y[:8]), (ids[8:], y[8:])]
    return Task(name="toy", model=ToyTransformer(), train_loader=batches, eval_loader=batches,
                transformer=True, probe_batches=lambda: iter(batches))


def test_activation_decomposition_separates_tokenwise_from_mixing():
    task = make_toy_task()
    a = {k: v.clone() for k, v in task.model.state_dict().items()}
    b = {k: v * 1.1 for k, v in a.items()}
    out = activation_diff(task, a, b, device="cpu", k=2, neighbors=16)
    rows = {row["name"]: row for row in out["layers"]}
    assert list(rows) == ["layers.0", "layers.1"] and out["config"]["blocks"] == "layers"
    tok, mix = rows["layers.0"], rows["layers.1"]
    assert tok["tokens"] == 16 * 12 and tok["depth"] == 1
    for tag in ("a", "b"):
        assert tok[f"alignment_{tag}"] > 0.99 and tok[f"residual_energy_{tag}"] < 0.02
        assert mix[f"residual_energy_{tag}"] > 0.5
        assert mix[f"angular_deviation_{tag}"] > tok[f"angular_deviation_{tag}"]


def test_diff_with_activations_on_torch_transformer_encoder():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True, dropout=0.0)

    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(40, 16)
            self.encoder = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)

        def forward(self, ids):
            return self.encoder(self.embed(ids)).mean(1)

    ids = torch.randint(0, 40, (4, 10))
    batches = [(ids, torch.zeros(4, dtype=torch.long))]
    task = Task(name="enc", model=Enc(), train_loader=batches, eval_loader=batches, transformer=True)
    a = {k: v.clone() for k, v in task.model.state_dict().items()}
    b = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in a.items()}
    r = diff(a, b, alpha=False, device="cpu", activations_task=task, max_tokens=30)
    acts = r.activations
    assert [row["name"] for row in acts["layers"]] == ["encoder.layers.0", "encoder.layers.1", "encoder.layers.2"]
    assert all(row["tokens"] == 30 for row in acts["layers"])
    for row in acts["layers"]:
        assert -1 <= row["alignment_a"] <= 1 and 0 <= row["projection_update_b"] <= 1
    assert "activations" in r.to_dict() and acts["config"]["probes"] == "eval_loader"


def test_find_blocks_needs_a_block_stack():
    with pytest.raises(ConfigError, match="no stack of transformer blocks"):
        find_blocks(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))


def test_padding_tokens_are_dropped_when_the_batch_has_a_mask():
    task = make_toy_task()
    ids, y = task.train_loader[0]
    mask = torch.ones_like(ids)
    mask[:, 9:] = 0  # the last three positions are padding
    batches = [(ids, mask, y)]
    task.probe_batches = lambda: iter(batches)
    task.forward = lambda model, batch: (model(batch[0]), batch[-1])
    sd = task.model.state_dict()
    out = activation_diff(task, sd, sd, device="cpu", k=2, neighbors=8)
    assert all(row["tokens"] == 8 * 9 for row in out["layers"])


@pytest.mark.gpu
def test_cuda_matches_cpu():
    a, b = _pair()
    cpu = diff(a, b, topk=3, device="cpu")
    gpu = diff(a, b, topk=3, device="cuda")
    for rc, rg in zip(cpu.layers, gpu.layers):
        assert rc.name == rg.name
        for field in ("rel_update", "dw_stable_rank", "subspace_overlap", "alpha_a"):
            x, y = getattr(rc, field), getattr(rg, field)
            assert (math.isnan(x) and math.isnan(y)) or y == pytest.approx(x, rel=1e-4, abs=1e-8)


def test_float32_working_precision_agrees():
    a, b = _pair()
    r64 = diff(a, b, topk=3, alpha=False, device="cpu")
    r32 = diff(a, b, topk=3, alpha=False, device="cpu", dtype="float32")
    assert r32.config["dtype"] == "float32"
    for x, y in zip(r64.layers, r32.layers):
        if x.status == "success":
            assert y.rel_update == pytest.approx(x.rel_update, rel=1e-4)
            assert y.spectral_ratio == pytest.approx(x.spectral_ratio, rel=1e-3)
    with pytest.raises(ConfigError, match="--dtype"):
        diff(a, b, dtype="float16")


def test_buffers_stay_out_of_the_diff():
    """GPT-2's causal mask (``h.N.attn.bias``, (1, 1, n, n)) and ``masked_bias`` are buffers: a change
    in them is no update of the model. Before, the mask was fitted as a conv2d layer and averaged
    into ``rel_update_global``."""
    from collections import OrderedDict

    from tests.checkpoints import gpt2_state_dict

    a = gpt2_state_dict()
    b = OrderedDict((k, v.clone()) for k, v in a.items())
    for key in b:
        if key.endswith(".attn.bias"):
            b[key] = torch.zeros_like(b[key])
        elif key.endswith(".attn.masked_bias"):
            b[key] = torch.tensor(5.0)
    result = diff(a, b, alpha=False, device="cpu")
    assert result.summary["rel_update_global"] == 0.0 and result.summary["rel_update_max"] == 0.0
    skipped = {r.param: r.reason for r in result.layers if r.status == "skipped"}
    assert skipped == {k: "buffer" for k in a if k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert not any(v["param"].endswith("masked_bias") for v in result.vectors)
    assert [r.param for r in result.layers if r.status == "success"][:2] == ["wte.weight", "wpe.weight"]
