import json
import math

import numpy as np
import pytest
import torch

import spectra
from spectra.analysis import AnalyzeConfig, analyze
from spectra.errors import ConfigError
from spectra.results import Analysis


def heavy(n: int, m: int, seed: int, df: float = 2.5) -> torch.Tensor:
    g = np.random.default_rng(seed)
    return torch.tensor(g.standard_t(df, size=(n, m)), dtype=torch.float32)


def test_every_key_is_accounted_for(tiny_state_dict):
    result = analyze(tiny_state_dict)
    layer_keys = {r.param for r in result.layers}
    assert layer_keys | set(result.attached) == set(tiny_state_dict)
    assert not layer_keys & set(result.attached)
    skipped = {r.param: r.reason for r in result.layers if r.status == "skipped"}
    assert skipped["embeddings.position_ids"] == "buffer"  # int64 position table: a buffer by name
    assert result.attached["encoder.layers.0.attention.q.bias"] == "encoder.layers.0.attention.q"


def test_records_are_computed_from_the_exact_spectrum(tiny_state_dict):
    result = analyze(tiny_state_dict)
    rec = result.layer("encoder.layers.1.mlp.fc1")
    W = tiny_state_dict["encoder.layers.1.mlp.fc1.weight"].double()
    ev = np.sort(np.linalg.svd(W.numpy(), compute_uv=False) ** 2)
    assert (rec.N, rec.M, rec.Q, rec.num_evals) == (32, 16, 2.0, 16)
    assert rec.lambda_max == pytest.approx(ev[-1], rel=1e-10)
    assert rec.norm == pytest.approx(ev.sum(), rel=1e-10)
    assert rec.stable_rank == pytest.approx(ev.sum() / ev[-1], rel=1e-10)
    assert rec.matrix_rank == 16
    assert rec.depth == 2
    np.testing.assert_allclose(result.evals[rec.name], ev, rtol=1e-9)


def test_depths_of_tiny_transformer(tiny_state_dict):
    result = analyze(tiny_state_dict)
    depth = {r.name: r.depth for r in result.layers}
    assert depth["embeddings.word_embeddings"] == 0
    assert depth["encoder.layers.0.attention.q"] == 1
    assert depth["encoder.layers.1.mlp.fc2"] == 2
    assert depth["head"] == 3


def test_conv2d_pooled_with_half_scaling():
    W = torch.randn(16, 8, 3, 3, dtype=torch.float64)
    result = analyze({"conv.weight": W})
    rec = result.layers[0]
    assert rec.kind == "conv2d" and rec.num_evals == 9 * 8
    slices = [W[:, :, i, j] for i in range(3) for j in range(3)]
    expected = np.sort(np.concatenate([np.linalg.svd(s.numpy(), compute_uv=False) ** 2 for s in slices])) * 0.5
    np.testing.assert_allclose(result.evals["conv"], expected, rtol=1e-9)


def test_conv1d_and_expert_stacks():
    sd = {"conv.weight": torch.randn(32, 16, 5), "blk.experts.w": torch.randn(4, 24, 12)}
    result = analyze(sd)
    names = [r.name for r in result.layers]
    assert names == ["conv", "blk.experts.w.0", "blk.experts.w.1", "blk.experts.w.2", "blk.experts.w.3"]
    assert result.layer("conv").num_evals == 16 * 5
    assert result.layer("blk.experts.w.2").expert == 2
    assert all(r.param == "blk.experts.w" for r in result.layers[1:])


def test_non_finite_and_small_layers_are_skipped_with_reasons():
    bad = torch.randn(20, 20)
    bad[3, 4] = float("nan")
    result = analyze({"bad.weight": bad, "small.weight": torch.randn(20, 4), "ok.weight": torch.randn(40, 20)})
    by = {r.name: r for r in result.layers}
    assert by["bad"].status == "skipped" and "non-finite" in by["bad"].reason
    assert by["small"].status == "skipped" and "min_evals 8" in by["small"].reason
    assert by["ok"].status == "success"
    assert result.summary["num_skipped"] == 2 and result.summary["num_success"] == 1


def test_failed_fit_is_never_labelled_and_stays_out_of_the_summary():
    sd = {"zero.weight": torch.zeros(30, 20), "ortho.weight": torch.eye(20), "ok.weight": heavy(80, 40, 1)}
    result = analyze(sd)
    by = {r.name: r for r in result.layers}
    for name in ("zero", "ortho"):
        assert by[name].status == "failed" and by[name].reason
        assert by[name].warning == ""
        assert math.isnan(by[name].alpha)
    assert result.summary["num_failed"] == 2
    assert result.summary["alpha"] == pytest.approx(by["ok"].alpha)


def test_include_exclude_list_excluded_layers_as_skipped(tiny_state_dict):
    result = analyze(tiny_state_dict, include=[r"encoder"], exclude=[r"\.attention\.[qk]\."])
    by = {r.name: r for r in result.layers}
    assert by["encoder.layers.0.attention.v"].status == "success"
    assert by["encoder.layers.0.attention.q"].status == "skipped"
    assert "excluded" in by["head"].reason


def test_warning_labels_follow_thresholds():
    sd = {"rand.weight": torch.randn(400, 100)}
    rec = analyze(sd).layers[0]
    assert rec.ok
    expected = "over-trained" if rec.alpha < 2 else "under-trained" if rec.alpha > 6 else ""
    assert rec.warning == expected


def test_optional_groups_bootstrap_mp_randomize_compare():
    sd = {"a.weight": heavy(300, 120, 3)}
    result = analyze(sd, bootstrap=30, mp_fit=True, randomize=True, compare_distributions=True, seed=5)
    rec = result.layers[0]
    lo, hi = rec.alpha_ci
    assert lo <= rec.alpha <= hi
    assert rec.sigma_mp > 0 and rec.num_spikes is not None and rec.bulk_max > rec.bulk_min
    assert rec.rand_lambda_max > 0 and rec.num_traps is not None and 0 <= rec.rand_distance <= 1
    assert set(rec.compare) == {"lognormal", "exponential"}
    again = analyze(sd, bootstrap=30, mp_fit=True, randomize=True, seed=5).layers[0]
    assert again.alpha_ci == rec.alpha_ci and again.rand_lambda_max == rec.rand_lambda_max


def test_json_round_trip_and_schema(tmp_path, tiny_state_dict):
    result = analyze(tiny_state_dict, bootstrap=10)
    path = tmp_path / "a.json"
    result.to_json(path)
    data = json.loads(path.read_text())
    assert data["schema"] == "spectra.analysis/1"
    required = {"name", "param", "kind", "shape", "N", "M", "Q", "depth", "num_evals", "lambda_max",
                "spectral_norm", "norm", "log_norm", "log_spectral_norm", "stable_rank", "entropy",
                "matrix_rank", "alpha", "alpha_weighted", "log_alpha_norm", "xmin", "xmax", "D", "sigma",
                "num_pl_spikes", "status", "reason", "warning"}
    for rec in data["layers"]:
        assert required <= set(rec)
        if rec["status"] != "success":
            assert rec["alpha"] is None  # null, never -1
    back = Analysis.from_json(path)
    assert back.layers == result.layers
    assert back.attached == result.attached


def test_frame_and_csv(tmp_path, tiny_state_dict):
    result = analyze(tiny_state_dict)
    frame = result.to_frame()
    assert len(frame) == len(result.layers) and "alpha" in frame.columns
    result.save(tmp_path / "a.csv")
    assert (tmp_path / "a.csv").read_text().startswith("name,param,kind")
    result.save_esd(tmp_path / "e.npz")
    with np.load(tmp_path / "e.npz") as esd:
        assert set(esd.files) == set(result.evals)


def test_module_input_and_public_export():
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    result = spectra.analyze(model)
    assert [r.name for r in result.layers] == ["0", "2"]
    assert result.attached == {"0.bias": "0", "2.bias": "2"}


def test_float32_and_svd_solver_agree_with_default(tiny_state_dict):
    base = analyze(tiny_state_dict).layer("encoder.layers.0.mlp.fc1")
    for opts in ({"dtype": "float32"}, {"solver": "svd"}):
        other = analyze(tiny_state_dict, **opts).layer("encoder.layers.0.mlp.fc1")
        assert other.lambda_max == pytest.approx(base.lambda_max, rel=1e-5)


@pytest.mark.parametrize(
    "opts, match",
    [({"fit": "x"}, "unknown fit"), ({"include": ["("]}, "invalid --include"), ({"min_evals": 1}, "min_evals"),
     ({"dtype": "int8"}, "dtype"), ({"device": "tpu"}, "device"), ({"bootstrap": -1}, "bootstrap")],
)
def test_config_validation(opts, match):
    with pytest.raises(ConfigError, match=match):
        AnalyzeConfig(**opts)


def test_unreadable_tensor_keeps_the_other_layers(tmp_path, tiny_state_dict):
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_state_dict.items()}, str(path))
    raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw[: len(raw) - 64]))  # cut the tail off the last tensor's bytes
    try:
        result = analyze(path)
    except spectra.CheckpointError as exc:  # a loader may refuse a truncated file up front
        assert str(path) in str(exc)
        return
    assert any(r.status == "skipped" and "unreadable" in r.reason for r in result.layers)
    assert result.summary["num_success"] > 5


def test_matches_weightwatcher_end_to_end(tmp_path):
    """Same directory through both tools: alpha, xmin, D, norms agree to 1e-6 relative."""
    ww = pytest.importorskip("weightwatcher")
    import logging

    from safetensors.torch import save_file

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    sd = {f"layers.{i}.fc.weight": heavy(160 + 20 * i, 64 + 8 * i, seed=i, df=2 + i) for i in range(4)}
    save_file(sd, str(tmp_path / "model.safetensors"))
    ours = {r.name: r for r in analyze(tmp_path).layers}
    details = ww.WeightWatcher().analyze(model=str(tmp_path))
    assert len(details) == 4
    for _, row in details.iterrows():
        rec = ours[row["longname"]]
        assert rec.alpha == pytest.approx(row["alpha"], rel=1e-6)
        assert rec.xmin == pytest.approx(row["xmin"], rel=1e-6)
        assert rec.D == pytest.approx(row["D"], rel=1e-6)
        assert rec.lambda_max == pytest.approx(row["lambda_max"], rel=1e-6)
        assert rec.log_norm == pytest.approx(row["log_norm"], rel=1e-6)
        assert rec.stable_rank == pytest.approx(row["stable_rank"], rel=1e-6)
        assert rec.alpha_weighted == pytest.approx(row["alpha_weighted"], rel=1e-6)
        assert rec.entropy == pytest.approx(row["entropy"], rel=1e-6)


@pytest.mark.gpu
def test_cuda_batched_path_matches_cpu(tiny_state_dict):
    cpu = analyze(tiny_state_dict, device="cpu")
    gpu = analyze(tiny_state_dict, device="cuda", batch_size=8)
    assert [r.name for r in gpu.layers] == [r.name for r in cpu.layers]
    for a, b in zip(cpu.layers, gpu.layers):
        if a.ok:
            assert b.alpha == pytest.approx(a.alpha, rel=1e-6)
            assert b.lambda_max == pytest.approx(a.lambda_max, rel=1e-9)


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        analyze({"w.weight": torch.randn(10, 10)}, device="cuda")


def test_non_finite_conv_and_batched_layers_are_skipped_others_kept():
    conv = torch.randn(16, 8, 3, 3)
    conv[0, 0, 1, 1] = float("inf")
    sd = {f"b.{i}.w.weight": torch.randn(24, 24) for i in range(3)}
    sd["b.1.w.weight"][2, 2] = float("nan")
    sd["conv.weight"] = conv
    result = analyze(sd, batch_size=3)  # the batched path falls back to one-by-one for the bad matrix
    by = {r.name: r for r in result.layers}
    assert by["conv"].status == "skipped" and "1 non-finite" in by["conv"].reason
    assert by["b.1.w"].status == "skipped" and "1 non-finite" in by["b.1.w"].reason
    assert by["b.0.w"].status == "success" and by["b.2.w"].status == "success"


# ------------------------------------------------------------------ model order and buffers


def _formats(tmp_path, sd, config):
    """The same weights as a torch .bin, a bare .safetensors and an HF directory with config.json."""
    from safetensors.torch import save_file

    from tests.checkpoints import write_hf_dir

    (tmp_path / "bin").mkdir()
    torch.save(sd, tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "st").mkdir()
    save_file(dict(sd), str(tmp_path / "st" / "model.safetensors"))
    return {"bin": tmp_path / "bin" / "pytorch_model.bin", "safetensors": tmp_path / "st" / "model.safetensors",
            "hf": write_hf_dir(tmp_path / "hf", sd, config)}


def test_layers_follow_model_order_in_every_format(tmp_path):
    """BertModel's named_modules() order (query before key before value before attention.output),
    not the alphabet, in the analysis, the LR map and the report's table, for .bin (insertion
    order), bare .safetensors (canonical order) and an HF directory (config.json)."""
    from spectra.prescribe import prescribe
    from spectra.report.build import ordered
    from tests.checkpoints import BERT_CONFIG, bert_state_dict

    sd = bert_state_dict()
    expected = [k.removesuffix(".weight") for k, t in sd.items() if t.dim() == 2]
    assert expected != sorted(expected)
    try:
        import transformers  # noqa: F401
        hf_order = "config"
    except ImportError:
        hf_order = "canonical"
    for fmt, path in _formats(tmp_path, sd, BERT_CONFIG).items():
        result = analyze(str(path))
        assert [r.name for r in result.layers] == expected, fmt
        assert result.config["order"] == {"bin": "stored", "safetensors": "canonical", "hf": hf_order}[fmt]
        assert [e.name for e in prescribe(result, "tempbalance").layers] == expected
        assert [r.name for r in ordered(result.layers)] == expected
        assert list(result.to_frame()["name"]) == expected


@pytest.mark.parametrize("where", ["state_dict", "bin", "hf"])
def test_gpt2_causal_mask_buffers_are_not_fitted_counted_or_mapped(tmp_path, where):
    """Older GPT-2 files carry ``h.N.attn.bias`` (1, 1, n, n) and ``h.N.attn.masked_bias``: buffers,
    recognised by name and shape without a config and from the config's model with one."""
    from spectra.prescribe import prescribe
    from tests.checkpoints import GPT2_CONFIG, gpt2_state_dict, write_hf_dir

    sd = gpt2_state_dict()
    buffers = {k for k in sd if k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert len(buffers) == 4
    if where == "bin":
        torch.save(sd, tmp_path / "model.bin")
        source = str(tmp_path / "model.bin")
    else:
        source = sd if where == "state_dict" else str(write_hf_dir(tmp_path / "hf", sd, GPT2_CONFIG))
    result = analyze(source)
    records = {r.param: r for r in result.layers}
    for key in buffers:
        assert (records[key].status, records[key].reason, records[key].kind) == ("skipped", "buffer", "buffer")
    assert not any(r.kind == "conv2d" for r in result.layers)
    assert result.summary["num_params"] == sum(t.numel() for k, t in sd.items() if k not in buffers)
    assert result.summary["num_buffers"] == len(buffers)
    assert not buffers & set(result.attached)
    assert records["h.0.attn.c_attn.weight"].kind == "linear" and records["h.0.attn.c_attn.weight"].ok
    for method in ("llr", "tempbalance", "alphadecay", "layer-decay"):
        lrmap = prescribe(result, method)
        assert not buffers & lrmap.keys(), method
        assert not any(e.prescribed for e in lrmap.layers if e.param in buffers)
