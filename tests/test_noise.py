"""spectra.noise: measured noise on a tiny task, per-example vs micro-batch paths, the Adam proxy."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from spectra.core.noise import unbiased_estimates
from spectra.errors import CheckpointError, ConfigError, FormatError
from spectra.noise import NOISE_SCHEMA, NoiseResult, layer_groups, measure_noise, optimizer_noise
from spectra.train.task import Task


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.layers = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)
        self.unused = nn.Linear(2, 2)

    def forward(self, x):
        h = torch.tanh(self.embed(x))
        for layer in self.layers:
            h = h + torch.tanh(layer(h))
        return self.head(self.norm(h))


def make_task(batch_size: int = 16, n: int = 128, seed: int = 0) -> Task:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    torch.manual_seed(seed)
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]
    return Task(name="tiny", model=TinyNet(), train_loader=batches, eval_loader=batches)


def test_layer_groups_attach_biases_and_norms_with_depth():
    model = TinyNet()
    groups = layer_groups([(n, p.shape, p.dtype) for n, p in model.named_parameters()])
    by = {g.name: g for g in groups}
    assert by["layers.0"].params == ("layers.0.weight", "layers.0.bias")
    assert by["layers.1"].params[2:] == ("norm.weight", "norm.bias")  # a norm follows the layer before it
    assert by["embed"].depth == 0 and by["layers.0"].depth == 1 and by["layers.1"].depth == 2
    assert by["head"].depth == 3
    covered = [k for g in groups for k in g.params]
    assert sorted(covered) == sorted(n for n, _ in model.named_parameters())  # every parameter exactly once


def test_measure_noise_layers_sum_to_global_and_match_hand_estimate():
    task = make_task()
    result = measure_noise(task, batches=3, micro_batch=4, device="cpu")
    assert result.source == "gradients" and result.config["b_small"] == 4 and result.config["b_big"] == 16
    ok = [r for r in result.layers if r.status == "success"]
    assert len(ok) >= 3
    measured = [r for r in result.layers if r.status != "skipped"]
    assert result.summary["grad_sq"] == pytest.approx(sum(r.grad_sq for r in measured))
    assert result.summary["trace_sigma"] == pytest.approx(sum(r.trace_sigma for r in measured))
    assert result.summary["b_simple"] == pytest.approx(result.summary["trace_sigma"] / result.summary["grad_sq"])
    for r in ok:
        assert r.b_simple == pytest.approx(r.trace_sigma / r.grad_sq)
        assert r.snr == pytest.approx(1 / r.b_simple)
        assert r.grad_nuclear >= r.grad_spectral > 0 and r.grad_fro > 0
    unused = result.layer("unused")
    assert unused.status == "skipped" and "does not use" in unused.reason
    # hand estimate for the head weight on the first batch only
    ref = make_task()
    model, (x, y) = ref.model.eval(), ref.train_loader[0]
    grads = []
    for j in range(4):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[4 * j:4 * j + 4]), y[4 * j:4 * j + 4]).backward()
        grads.append(torch.cat([model.head.weight.grad.flatten(), model.head.bias.grad.flatten()]).double())
    small = sum(float(g.square().sum()) for g in grads) / 4
    big = float((sum(grads) / 4).square().sum())
    one = measure_noise(make_task(), batches=1, micro_batch=4, device="cpu").layer("head")
    assert one.params == ("head.weight", "head.bias")
    assert (one.grad_sq, one.trace_sigma) == pytest.approx(unbiased_estimates(small, big, 4, 16))


def test_per_example_equals_micro_batches_of_one():
    a = measure_noise(make_task(), batches=2, per_example=True, device="cpu")
    b = measure_noise(make_task(), batches=2, micro_batch=1, device="cpu")
    assert a.config["b_small"] == 1 and a.config["per_example"] is True
    assert a.config["per_example_method"] == "torch.func"
    for ra, rb in zip(a.layers, b.layers):
        assert ra.name == rb.name
        if ra.status == "skipped":
            continue
        assert ra.grad_sq == pytest.approx(rb.grad_sq, rel=1e-4, abs=1e-9)
        assert ra.trace_sigma == pytest.approx(rb.trace_sigma, rel=1e-4)
        assert ra.grad_fro == pytest.approx(rb.grad_fro, rel=1e-4)


def test_json_round_trip_uses_null_for_missing(tmp_path):
    result = measure_noise(make_task(), batches=2, micro_batch=8, device="cpu")
    path = tmp_path / "noise.json"
    result.to_json(path)
    text = path.read_text()
    assert '"schema": "spectra.noise/1"' in text and "NaN" not in text
    back = NoiseResult.from_json(path)
    assert back.layer("unused").status == "skipped" and math.isnan(back.layer("unused").grad_sq)
    assert back.summary["b_simple"] == pytest.approx(result.summary["b_simple"])
    assert back.to_dict()["schema"] == NOISE_SCHEMA
    (tmp_path / "other.json").write_text('{"schema": "spectra.diff/1"}')
    with pytest.raises(FormatError, match="expected spectra.noise/1"):
        NoiseResult.from_json(tmp_path / "other.json")


def test_checkpoint_weights_are_loaded(tmp_path):
    trained = make_task().model
    with torch.no_grad():
        trained.head.weight.mul_(10)
    path = tmp_path / "w.pt"
    torch.save(trained.state_dict(), path)
    base = measure_noise(make_task(), batches=1, micro_batch=4, device="cpu")
    loaded = measure_noise(make_task(), path, batches=1, micro_batch=4, device="cpu")
    assert loaded.checkpoint.endswith("w.pt")
    assert loaded.layer("layers.0").grad_fro != pytest.approx(base.layer("layers.0").grad_fro)
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="none of its"):
        measure_noise(make_task(), tmp_path / "bad.pt", batches=1, device="cpu")


def test_bad_options_raise_config_errors():
    with pytest.raises(ConfigError, match="--batches"):
        measure_noise(make_task(), batches=0, device="cpu")
    with pytest.raises(ConfigError, match="two or more micro-batches"):
        measure_noise(make_task(batch_size=4), batches=1, micro_batch=4, device="cpu")


def _adam_checkpoint(tmp_path, steps=30, freeze_embed=False):
    task = make_task()
    model = task.model
    params = [p for n, p in model.named_parameters() if not (freeze_embed and n.startswith("embed"))]
    opt = torch.optim.Adam(params, lr=1e-3)
    for i in range(steps):
        x, y = task.train_loader[i % len(task.train_loader)]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, path)
    return path, model, opt


def test_optimizer_proxy_matches_core_estimator(tmp_path):
    from spectra.core.noise import adam_noise_estimates

    path, model, opt = _adam_checkpoint(tmp_path)
    result = optimizer_noise(path, task=make_task(), batch_size=16)
    assert result.source == "optimizer-proxy" and "heuristic" in result.config["estimator"]
    st = opt.state[model.head.weight]
    g, t = adam_noise_estimates(st["exp_avg"], st["exp_avg_sq"], beta1=0.9, beta2=0.999, step=int(st["step"]))
    sb = opt.state[model.head.bias]
    g2, t2 = adam_noise_estimates(sb["exp_avg"], sb["exp_avg_sq"], beta1=0.9, beta2=0.999, step=int(sb["step"]))
    head = result.layer("head")
    assert head.params == ("head.weight", "head.bias")
    assert head.grad_sq == pytest.approx(g + g2)
    assert head.trace_sigma == pytest.approx(16 * (t + t2))
    # without a task, names come from the checkpoint's keys; the same numbers result
    keyed = optimizer_noise(path, batch_size=16)
    assert keyed.layer("head").grad_sq == pytest.approx(head.grad_sq)


def test_optimizer_proxy_matches_by_shape_when_params_were_frozen(tmp_path):
    path, _, _ = _adam_checkpoint(tmp_path, freeze_embed=True)
    result = optimizer_noise(path)
    assert result.layer("embed").status == "skipped"
    assert result.layer("head").status in ("success", "failed")
    assert result.config["units"].startswith("per training batch")


def test_optimizer_proxy_errors(tmp_path):
    torch.save({"model": make_task().model.state_dict()}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="no optimizer state"):
        optimizer_noise(tmp_path / "w.pt")
    model = make_task().model
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = make_task().train_loader[0]
    nn.functional.cross_entropy(model(x), y).backward()
    sgd.step()
    torch.save({"model": model.state_dict(), "optimizer": sgd.state_dict()}, tmp_path / "sgd.pt")
    with pytest.raises(CheckpointError, match="no Adam moments"):
        optimizer_noise(tmp_path / "sgd.pt")
    bad = {"state": {0: {"exp_avg": torch.zeros(5, 5), "exp_avg_sq": torch.zeros(5, 5), "step": 1}},
           "param_groups": [{"params": list(range(len(list(model.parameters())))), "betas": (0.9, 0.999)}]}
    torch.save({"model": model.state_dict(), "optimizer": bad}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="shape"):
        optimizer_noise(tmp_path / "bad.pt", task=make_task())


class Branchy(nn.Module):
    """Data-dependent control flow: torch.func.vmap cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        if bool(x.sum() > 0):
            return self.fc(x)
        return self.fc(-x)


def test_per_example_falls_back_to_a_loop_when_vmap_fails(caplog):
    def task():
        t = make_task()
        torch.manual_seed(0)
        t.model = Branchy()
        return t

    a = measure_noise(task(), batches=2, per_example=True, device="cpu")
    b = measure_noise(task(), batches=2, micro_batch=1, device="cpu")
    assert a.config["per_example_method"] == "loop"
    assert "falling back" in caplog.text
    assert a.layer("fc").grad_sq == pytest.approx(b.layer("fc").grad_sq)
    assert a.layer("fc").trace_sigma == pytest.approx(b.layer("fc").trace_sigma)


def test_bare_submodule_checkpoint_is_matched_under_the_wrapper_prefix(tmp_path):
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = TinyNet()

        def forward(self, x):
            return self.body(x)

    inner = TinyNet()
    with torch.no_grad():
        inner.head.weight.fill_(0.5)
    torch.save(inner.state_dict(), tmp_path / "inner.pt")
    task = make_task()
    task.model = Wrapper()
    from spectra.noise import load_weights

    load_weights(task.model, tmp_path / "inner.pt")
    assert torch.equal(task.model.body.head.weight, torch.full((3, 8), 0.5))


@pytest.mark.gpu
def test_cuda_matches_cpu():
    cpu = measure_noise(make_task(), batches=2, micro_batch=4, device="cpu")
    gpu = measure_noise(make_task(), batches=2, micro_batch=4, device="cuda")
    assert gpu.config["device"].startswith("cuda")
    assert gpu.summary["grad_sq"] == pytest.approx(cpu.summary["grad_sq"], rel=1e-3)
    assert gpu.summary["trace_sigma"] == pytest.approx(cpu.summary["trace_sigma"], rel=1e-3)
    pe = measure_noise(make_task(), batches=2, per_example=True, device="cuda")
    assert pe.config["per_example_method"] == "torch.func"


def shuffled_task(n: int = 96, batch_size: int = 16) -> Task:
    """A task whose model init and data order come from the global torch RNG (unseeded loader)."""
    from spectra.train.tasks import TensorLoader

    x = torch.randn(n, 6)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    loader = TensorLoader((x, y), batch_size, shuffle=True)
    return Task(name="shuffled", model=TinyNet(), train_loader=loader, eval_loader=loader)


def _strip(result):
    data = result.to_dict()
    data.pop("created")
    return data


def test_same_seed_same_result_different_seed_different_and_caller_rng_untouched():
    spec = "tests.test_noise:shuffled_task"
    before = torch.get_rng_state()
    a = measure_noise(spec, batches=3, micro_batch=4, device="cpu", seed=0)
    assert torch.equal(torch.get_rng_state(), before)
    torch.rand(5)  # whatever the caller's stream does in between
    b = measure_noise(spec, batches=3, micro_batch=4, device="cpu", seed=0)
    c = measure_noise(spec, batches=3, micro_batch=4, device="cpu", seed=1)
    assert _strip(a) == _strip(b)
    assert a.summary["b_simple"] != c.summary["b_simple"]
    pe = [measure_noise(spec, task_args={"batch_size": 8}, batches=2, per_example=True, device="cpu", seed=3)
          for _ in range(2)]
    assert _strip(pe[0]) == _strip(pe[1]) and pe[0].config["b_big"] == 8


def test_result_carries_intervals_and_reliability():
    result = measure_noise(make_task(n=256), batches=12, micro_batch=4, device="cpu")
    s = result.summary
    assert s["rounds"] == 12 and result.config["level"] == 0.95
    lo, hi = s["g2_ci"]
    assert lo < s["grad_sq"] < hi
    lo, hi = s["trace_sigma_ci"]
    assert lo < s["trace_sigma"] < hi
    assert isinstance(s["reliable"], bool) and (s["reliable"] or s["reliable_reason"])
    for r in result.layers:
        if r.status == "skipped":
            assert not r.reliable and r.g2_ci is None
            continue
        assert r.g2_ci[0] < r.grad_sq < r.g2_ci[1]
        assert r.reliable == (r.g2_ci[0] > 0 and r.b_simple_ci is not None
                              and r.b_simple_ci[1] <= 4 * r.b_simple_ci[0])
        if r.b_simple_ci is not None:
            assert r.b_simple_ci[0] <= r.b_simple <= r.b_simple_ci[1]
    assert s["num_reliable"] == sum(r.reliable for r in result.layers)
    back = NoiseResult.from_dict(result.to_dict())
    assert back.to_dict() == result.to_dict() and back.layers[0].g2_ci == result.layers[0].g2_ci
    one = measure_noise(make_task(), batches=1, micro_batch=4, device="cpu")
    assert all(not r.reliable and r.g2_ci is None for r in one.layers) and one.summary["g2_ci"] is None


def test_optimizer_proxy_at_step_one_fails_layers_with_a_reason_not_a_traceback(tmp_path):
    path, _, _ = _adam_checkpoint(tmp_path, steps=1)
    result = optimizer_noise(path, task=make_task(), batch_size=16)
    measured = [r for r in result.layers if r.status != "skipped"]
    assert measured and all(r.status == "failed" and r.reason.startswith("optimizer step 1") for r in measured)
    assert result.summary["status"] == "failed" and not result.summary["reliable"]
    assert result.config["step"] == [1, 1]
    from spectra.noise.advice import noise_advice

    assert any("step 1" in line for line in noise_advice(result))


def test_optimizer_proxy_is_never_reliable_and_says_why(tmp_path):
    path, _, _ = _adam_checkpoint(tmp_path, steps=30)
    result = optimizer_noise(path, task=make_task())
    assert all(not r.reliable for r in result.layers)
    assert all("proxy" in r.reliable_reason for r in result.layers if r.status == "success")
    from spectra.noise.advice import noise_advice

    text = " ".join(noise_advice(result))
    assert "no error bars" in text and "--batch-size" in text and "--task" in text
