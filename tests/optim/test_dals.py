"""DALS: limit-case equivalences, hand-computed components, torch.optim contract."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from .optim_toys import flat, make_toy, toy_data, train

from spectra.errors import ConfigError
from spectra.optim import DALS
from spectra.optim.dals import PRESETS, trust_ratio
from spectra.optim.schedules import phase_cosine

OFF = dict(schedule=False, grokfast_lamb=0.0, trust_ratio=False)


def _params(*values, requires_grad=True):
    return [torch.tensor(v, dtype=torch.float64, requires_grad=requires_grad) for v in values]


def _set_grads(params, grads):
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=p.dtype)


# -- reduces exactly to momentum SGD / AdamW ----------------------------------------------------
@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                dict(momentum=0.5, dampening=0.3), dict(momentum=0.0),
                                dict(momentum=0.9, maximize=True)])
def test_reduces_to_sgd(foreach, kw):
    ref, ours = make_toy(), make_toy()
    train(ref, torch.optim.SGD(ref.parameters(), lr=0.05, **kw), 20)
    train(ours, DALS(ours.parameters(), lr=0.05, total_steps=20, foreach=foreach, **OFF, **kw), 20)
    torch.testing.assert_close(flat(ours), flat(ref))


@pytest.mark.parametrize("foreach", [False, True])
def test_reduces_to_adamw(foreach):
    ref, ours = make_toy(), make_toy()
    train(ref, torch.optim.AdamW(ref.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=0.1), 20)
    opt = DALS(ours.parameters(), lr=0.01, base="adam", betas=(0.8, 0.99), weight_decay=0.1, total_steps=20,
               foreach=foreach, **OFF)
    train(ours, opt, 20)
    torch.testing.assert_close(flat(ours), flat(ref))


def test_sgd_decoupled_decay_matches_hand_rolled_reference():
    ref, ours = make_toy(), make_toy()
    sgd = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    x, y = toy_data()
    for _ in range(10):  # decoupled decay: w <- w (1 - lr wd), then the SGD step
        sgd.zero_grad()
        (ref(x) - y).square().mean().backward()
        with torch.no_grad():
            for p in ref.parameters():
                p.mul_(1 - 0.05 * 0.2)
        sgd.step()
    train(ours, DALS(ours.parameters(), lr=0.05, weight_decay=0.2, total_steps=10, **OFF), 10)
    torch.testing.assert_close(flat(ours), flat(ref))


# -- trust ratio ----------------------------------------------------------------------------------
def test_trust_ratio_formula():
    w = torch.tensor([5.0, 0.0, 100.0, 1.0, 3.0])
    u = torch.tensor([1.0, 2.0, 1.0, 0.0, 0.001])
    expected = torch.tensor([5.0 / 1.5, 1.0, 10.0, 1.0, 3.0 / 0.501])
    torch.testing.assert_close(trust_ratio(w, u, clip=(0.1, 10.0), eps=0.5), expected)
    torch.testing.assert_close(trust_ratio(torch.tensor([1.0]), torch.tensor([100.0]), clip=(0.1, 10.0), eps=0.0),
                               torch.tensor([0.1]))


@pytest.mark.parametrize("foreach", [False, True])
def test_trust_ratio_normalized_across_layers_and_1d_exempt(foreach):
    a, b, bias = _params([[3.0, 4.0]], [[1.0, 0.0]], [1.0])
    opt = DALS([a, b, bias], lr=0.1, momentum=0.0, schedule=False, grokfast_lamb=0.0, trust_eps=0.0,
               total_steps=10, foreach=foreach)
    _set_grads([a, b, bias], [[[0.6, 0.8]], [[0.0, 2.0]], [0.5]])
    opt.step()
    # tau_a = 5 / 1 = 5, tau_b = 1 / 2 = 0.5, mean 2.75; the bias is exempt (factor 1)
    torch.testing.assert_close(a.detach(), torch.tensor([[3.0 - 0.1 * 5 / 2.75 * 0.6, 4.0 - 0.1 * 5 / 2.75 * 0.8]],
                                                        dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([[1.0, -0.1 * 0.5 / 2.75 * 2.0]], dtype=torch.float64))
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0 - 0.05], dtype=torch.float64))


def test_trust_ratio_without_normalization_is_clipped():
    a, c = _params([[3.0, 4.0]], [[100.0]])
    opt = DALS([a, c], lr=0.1, momentum=0.0, schedule=False, grokfast_lamb=0.0, trust_eps=0.0,
               normalize_trust=False, total_steps=10)
    _set_grads([a, c], [[[0.6, 0.8]], [[1.0]]])
    opt.step()
    torch.testing.assert_close(a.detach(), torch.tensor([[3.0 - 0.5 * 0.6, 4.0 - 0.5 * 0.8]], dtype=torch.float64))
    torch.testing.assert_close(c.detach(), torch.tensor([[100.0 - 0.1 * 10.0]], dtype=torch.float64))


@pytest.mark.parametrize("foreach", [False, True])
def test_groups_with_their_own_band_and_normalization(foreach):
    a, b, c = _params([[3.0, 4.0]], [[1.0, 0.0]], [[100.0]])
    groups = [{"params": [a]}, {"params": [b], "trust_clip": (0.1, 0.25)},
              {"params": [c], "normalize_trust": False}]
    opt = DALS(groups, lr=0.1, momentum=0.0, schedule=False, grokfast_lamb=0.0, trust_eps=0.0, total_steps=10,
               foreach=foreach)
    _set_grads([a, b, c], [[[0.6, 0.8]], [[0.0, 2.0]], [[1.0]]])
    opt.step()
    # tau_a = 5, tau_b = clip(0.5, 0.1, 0.25) = 0.25 (its own band), tau_c = clip(100) = 10 (not normalized);
    # a and b are normalized by their own mean, 2.625
    torch.testing.assert_close(a.detach(), torch.tensor([[3.0 - 0.1 * 5 / 2.625 * 0.6, 4.0 - 0.1 * 5 / 2.625 * 0.8]],
                                                        dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([[1.0, -0.1 * 0.25 / 2.625 * 2.0]], dtype=torch.float64))
    torch.testing.assert_close(c.detach(), torch.tensor([[100.0 - 0.1 * 10.0]], dtype=torch.float64))


@pytest.mark.parametrize("foreach", [False, True])
def test_adam_base_trust_ratio_uses_the_bias_corrected_direction(foreach):
    a, b, bias = _params([[3.0, 4.0]], [[1.0, 0.0]], [1.0])
    opt = DALS([a, b, bias], lr=0.1, base="adam", eps=0.0, schedule=False, grokfast_lamb=0.0, trust_eps=0.0,
               total_steps=10, foreach=foreach)
    _set_grads([a, b, bias], [[[0.6, -0.8]], [[-3.0, 2.0]], [0.5]])
    opt.step()
    # step 1: m^ = g, v^ = g^2, u = g / |g| = sign(g); ||u|| = sqrt(2) for both, ||w|| = 5 and 1
    tau_a, tau_b = 5 / math.sqrt(2), 1 / math.sqrt(2)
    mean = (tau_a + tau_b) / 2
    torch.testing.assert_close(a.detach(), torch.tensor([[3.0 - 0.1 * tau_a / mean, 4.0 + 0.1 * tau_a / mean]],
                                                        dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([[1.0 + 0.1 * tau_b / mean, -0.1 * tau_b / mean]],
                                                        dtype=torch.float64))
    torch.testing.assert_close(bias.detach(), torch.tensor([1.0 - 0.1], dtype=torch.float64))


# -- depth-aware Grokfast -------------------------------------------------------------------------
def test_grokfast_filter_two_steps_by_hand():
    (w,) = _params([1.0, 1.0])  # 1-D: no trust ratio
    lr, alpha, lamb = 0.1, 0.9, 2.0
    opt = DALS([w], lr=lr, momentum=0.0, schedule=False, trust_ratio=False, warmup=0, grokfast_alpha=alpha,
               grokfast_lamb=lamb, grokfast_normalize=False, total_steps=10)
    g1, g2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64)
    w.grad = g1.clone()
    opt.step()  # zero-started EMA h = (1 - alpha) g1; step = g1 + lamb h (g1 gets no extra weight)
    expected = torch.tensor([1.0, 1.0], dtype=torch.float64) - lr * (g1 + lamb * (1 - alpha) * g1)
    torch.testing.assert_close(w.detach(), expected)
    w.grad = g2.clone()
    opt.step()  # h = alpha (1 - alpha) g1 + (1 - alpha) g2; step = g2 + lamb h
    h = alpha * (1 - alpha) * g1 + (1 - alpha) * g2
    h_hat = h / (1 - alpha**2)  # the stored bias-corrected average: (alpha g1 + g2) / (1 + alpha)
    torch.testing.assert_close(w.detach(), expected - lr * (g2 + lamb * h))
    torch.testing.assert_close(opt.state[w]["grokfast_avg"], h_hat)  # the state is the corrected average
    assert opt.state[w]["grokfast_steps"] == 2
    torch.testing.assert_close(w.grad, g2)  # p.grad itself is not modified


def test_grokfast_amplification_grows_with_depth():
    low, mid, top = _params([0.0], [0.0], [0.0])
    groups = [{"params": [low], "depth": 0}, {"params": [mid], "depth": 1}, {"params": [top], "depth": 2}]
    opt = DALS(groups, lr=1.0, momentum=0.0, schedule=False, trust_ratio=False, warmup=0, grokfast_lamb=2.0,
               grokfast_floor=0.25, grokfast_alpha=0.5, total_steps=10)
    _set_grads([low, mid, top], [[1.0], [1.0], [1.0]])
    opt.step()  # the EMA is the gradient itself on step 1: normalized, the step is exactly g
    for p in (low, mid, top):
        torch.testing.assert_close(p.detach(), torch.tensor([-1.0], dtype=torch.float64))
    _set_grads([low, mid, top], [[3.0], [3.0], [3.0]])
    opt.step()  # h = 0.5 * 0.5 + 0.5 * 3 = 1.75; lambda_l = 2 (0.25 + 0.75 d_l), ramped by 1 - 0.5^2
    h = 1.75
    for p, d in ((low, 0.0), (mid, 0.5), (top, 1.0)):
        lam = 2.0 * (0.25 + 0.75 * d)
        step = (3.0 + lam * h) / (1.0 + 0.75 * lam)  # (g + lambda h) / (1 + lambda_n): g if g = h^
        torch.testing.assert_close(p.detach(), torch.tensor([-1.0 - step], dtype=torch.float64))


def test_normalized_filter_leaves_a_constant_gradient_unchanged_at_every_step():
    (w,) = _params([0.0, 0.0])
    opt = DALS([w], lr=0.1, momentum=0.0, schedule=False, trust_ratio=False, warmup=0, grokfast_alpha=0.9,
               grokfast_lamb=3.0, total_steps=10)
    for t in range(1, 6):  # h^ = g, so (g + lambda h) / (1 + lambda_n) = g whatever the ramp
        w.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
        opt.step()
        torch.testing.assert_close(w.detach(), torch.tensor([-0.1 * t, 0.2 * t], dtype=torch.float64))


def test_grokfast_is_off_during_warmup_but_the_ema_accumulates():
    (w,) = _params([0.0])
    opt = DALS([w], lr=1.0, momentum=0.0, schedule=False, trust_ratio=False, warmup=2, grokfast_alpha=0.5,
               grokfast_lamb=1.0, grokfast_normalize=False, total_steps=10)
    for expected, g in ((-1.0, 1.0), (-4.0, 3.0)):  # warmup: plain gradient steps
        w.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        torch.testing.assert_close(w.detach(), torch.tensor([expected], dtype=torch.float64))
    w.grad = torch.tensor([1.0], dtype=torch.float64)
    opt.step()  # h: 0.5 -> 1.75 -> 1.375 (accumulated through warmup); step = g + lambda h = 1 + 1.375
    torch.testing.assert_close(w.detach(), torch.tensor([-4.0 - 1.0 - 1.375], dtype=torch.float64))


# -- schedule, depth factor, LR convention --------------------------------------------------------
def test_phase_cosine_schedule_is_built_in():
    (w,) = _params([0.0])
    total, warm = 20, 4
    opt = DALS([w], lr=0.5, momentum=0.0, grokfast_lamb=0.0, trust_ratio=False, warmup=warm, min_lr_ratio=0.1,
               total_steps=total)
    for t in range(total + 3):
        before = w.detach().clone()
        w.grad = torch.tensor([1.0], dtype=torch.float64)
        opt.step()
        factor = phase_cosine(t, total_steps=total, warmup=warm, min_ratio=0.1)
        torch.testing.assert_close(before - w.detach(), torch.tensor([0.5 * factor], dtype=torch.float64))
        assert opt.param_groups[0]["scheduled_lr"] == pytest.approx(0.5 * factor)
    assert opt.param_groups[0]["step"] == total + 3 and opt.param_groups[0]["lr"] == 0.5


def test_group_lr_is_used_as_is_and_lr_multiplier_not_reapplied():
    a, b = _params([0.0], [0.0])
    groups = [{"params": [a], "lr": 0.2, "lr_multiplier": 2.0}, {"params": [b], "lr": 0.1, "lr_multiplier": 1.0}]
    opt = DALS(groups, lr=0.1, momentum=0.0, total_steps=5, **OFF)
    _set_grads([a, b], [[1.0], [1.0]])
    opt.step()
    torch.testing.assert_close(a.detach(), torch.tensor([-0.2], dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([-0.1], dtype=torch.float64))


def test_depth_decay_normalized_to_mean_one():
    a, b = _params([0.0], [0.0])
    opt = DALS([{"params": [a], "depth": 0}, {"params": [b], "depth": 1}], lr=1.0, momentum=0.0, depth_decay=0.5,
               total_steps=5, **OFF)
    _set_grads([a, b], [[1.0], [1.0]])
    opt.step()  # raw 0.5 and 1, mean 0.75
    torch.testing.assert_close(torch.stack([a.detach(), b.detach()]).flatten(),
                               torch.tensor([-2 / 3, -4 / 3], dtype=torch.float64))


def test_torch_scheduler_composes_with_built_in_schedule():
    (w,) = _params([0.0])
    opt = DALS([w], lr=1.0, momentum=0.0, total_steps=5, **OFF)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 ** t)
    for t in range(3):
        before = w.detach().clone()
        w.grad = torch.tensor([1.0], dtype=torch.float64)
        opt.step()
        sched.step()
        torch.testing.assert_close(before - w.detach(), torch.tensor([0.5 ** t], dtype=torch.float64))


# -- torch.optim contract -------------------------------------------------------------------------
@pytest.mark.parametrize("variant, foreach", [("dals", False), ("dals", True), ("dals-fast", False),
                                              ("dals-ft", True)])
def test_state_dict_round_trip_resumes_bit_identically(variant, foreach):
    kw = {**PRESETS[variant], "warmup": 3, "foreach": foreach}
    model = make_toy()
    opt = DALS(model.parameters(), lr=0.02, total_steps=40, **kw)
    train(model, opt, 20)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    twin = copy.deepcopy(model)
    twin_opt = DALS(twin.parameters(), lr=0.02, total_steps=40, **kw)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin.load_state_dict(saved["model"])
    twin_opt.load_state_dict(saved["opt"])
    train(model, opt, 20)
    train(twin, twin_opt, 20)
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("variant", sorted(PRESETS))
def test_loss_decreases_on_toy_problem(variant):
    model = make_toy()
    lr = 1e-2 if PRESETS[variant].get("base") == "adam" else 0.05
    losses = train(model, DALS(model.parameters(), lr=lr, total_steps=60, **PRESETS[variant]), 60)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_foreach_matches_single_tensor_path_with_every_component_on(base):
    runs = []
    for foreach in (False, True):
        model = make_toy()
        groups = [{"params": list(m.parameters()), "depth": d}
                  for d, m in enumerate([model.stem, model.blocks[0], model.blocks[1], model.head])]
        opt = DALS(groups, lr=0.02, base=base, warmup=2, weight_decay=0.01, depth_decay=0.8, total_steps=15,
                   foreach=foreach)
        train(model, opt, 15)
        runs.append(flat(model))
    torch.testing.assert_close(runs[0], runs[1])


def test_maximize_mirrors_minimize():
    up, down = make_toy(), make_toy()
    x, y = toy_data()
    opt_up = DALS(up.parameters(), lr=0.02, total_steps=10, maximize=True)
    opt_down = DALS(down.parameters(), lr=0.02, total_steps=10)
    for _ in range(5):
        for model, opt, sign in ((up, opt_up, -1.0), (down, opt_down, 1.0)):
            opt.zero_grad()
            (sign * (model(x) - y).square().mean()).backward()
            opt.step()
    torch.testing.assert_close(flat(up), flat(down))


def test_bf16_parameters_train_and_keep_their_dtype():
    model = make_toy(dtype=torch.bfloat16)
    opt = DALS(model.parameters(), lr=0.05, total_steps=40)
    losses = train(model, opt, 40)
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in model.parameters())
    assert all(v.dtype == torch.bfloat16 for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    assert losses[-1] < 0.5 * losses[0]


def test_closure_params_without_grad_and_repr():
    model = make_toy()
    model.head.bias.requires_grad_(False)
    opt = DALS(model.parameters(), lr=0.05, total_steps=5)
    x, y = toy_data()

    def closure():
        opt.zero_grad()
        loss = (model(x) - y).square().mean()
        loss.backward()
        return loss

    assert torch.is_tensor(opt.step(closure))
    assert model.head.bias not in opt.state
    assert "DALS" in repr(opt) and "total_steps" in repr(opt)


def test_sparse_gradients_are_rejected():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    opt = DALS(emb.parameters(), total_steps=5)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


@pytest.mark.parametrize("kw, word", [(dict(total_steps=0), "total_steps"), (dict(base="lion"), "base"),
                                      (dict(momentum=1.0), "momentum"), (dict(trust_clip=(2.0, 1.0)), "trust_clip"),
                                      (dict(warmup=1.5), "warmup"), (dict(lr=-1.0), "lr"),
                                      (dict(nesterov=True, momentum=0.0), "nesterov")])
def test_invalid_arguments_name_the_option(kw, word):
    kw = {"total_steps": 10, **kw}
    with pytest.raises(ConfigError, match=word):
        DALS(make_toy().parameters(), **kw)


def test_presets_set_their_documented_options():
    fast = DALS.fast(make_toy().parameters(), total_steps=10).param_groups[0]
    assert (fast["warmup"], fast["peak_factor"], fast["grokfast_alpha"]) == (0.02, 2.0, 0.9)
    ft = DALS.finetune(make_toy().parameters(), total_steps=10, grokfast_lamb=0.5).param_groups[0]
    assert (ft["base"], ft["depth_decay"], ft["grokfast_lamb"], ft["lr"]) == ("adam", 0.9, 0.5, 1e-3)


def test_state_dict_with_the_older_raw_grokfast_ema_resumes_identically():
    """State dicts written before the filter stored h^ carry the raw EMA h; loading converts it."""
    model = make_toy()
    opt = DALS(model.parameters(), lr=0.02, warmup=2, total_steps=30)
    train(model, opt, 10)
    state = copy.deepcopy(opt.state_dict())
    alpha = opt.param_groups[0]["grokfast_alpha"]
    for s in state["state"].values():  # rewrite to the older layout: raw EMA h = h^ (1 - a^n)
        s["grokfast_ema"] = s.pop("grokfast_avg") * (1 - alpha ** s["grokfast_steps"])
    twin = copy.deepcopy(model)
    twin_opt = DALS(twin.parameters(), lr=0.02, warmup=2, total_steps=30)
    twin_opt.load_state_dict(state)
    assert all("grokfast_ema" not in s for s in twin_opt.state.values())
    train(model, opt, 10)
    train(twin, twin_opt, 10)
    torch.testing.assert_close(flat(twin), flat(model))


def test_setstate_backfills_keys_missing_from_older_state_dicts():
    opt = DALS(make_toy().parameters(), total_steps=10)
    state = opt.state_dict()
    for group in state["param_groups"]:
        del group["peak_factor"], group["normalize_trust"]
    twin = DALS(make_toy().parameters(), total_steps=10)
    twin.load_state_dict(state)
    assert twin.param_groups[0]["peak_factor"] == 1.0 and twin.param_groups[0]["normalize_trust"] is True


@pytest.mark.parametrize("base", ["sgd", "adam"])
@pytest.mark.parametrize("foreach", [False, True])
def test_step_reads_no_tensor_value_on_the_host(monkeypatch, base, foreach):
    """A CPU proxy for "no host-device syncs": converting any tensor to a Python value fails."""
    model = make_toy()
    groups = [{"params": list(m.parameters()), "depth": d}
              for d, m in enumerate([model.stem, model.blocks[0], model.blocks[1], model.head])]
    opt = DALS(groups, lr=0.02, base=base, warmup=1, weight_decay=0.01, depth_decay=0.9, total_steps=10,
               foreach=foreach)
    x, y = toy_data()

    def refuse(self, *args, **kwargs):
        raise AssertionError("DALS.step read a tensor value on the host")

    for _ in range(3):
        opt.zero_grad()
        (model(x) - y).square().mean().backward()
        with monkeypatch.context() as patch:
            for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
                patch.setattr(torch.Tensor, name, refuse)
            opt.step()


# -- CUDA -----------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_cuda_matches_cpu_and_step_never_syncs(base):
    results = []
    for device in ("cpu", "cuda"):
        model = make_toy().to(device)
        x, y = (t.to(device) for t in toy_data())
        groups = [{"params": list(m.parameters()), "depth": d}
                  for d, m in enumerate([model.stem, model.blocks[0], model.blocks[1], model.head])]
        opt = DALS(groups, lr=0.02, base=base, warmup=2, weight_decay=0.01, total_steps=10)
        for _ in range(10):
            opt.zero_grad()
            (model(x) - y).square().mean().backward()
            if device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            try:
                opt.step()
            finally:
                if device == "cuda":
                    torch.cuda.set_sync_debug_mode("default")
        results.append(flat(model).cpu())
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_foreach_trains():
    model = make_toy(dtype=torch.bfloat16).cuda()
    x, y = (t.cuda().bfloat16() for t in toy_data())
    opt = DALS(model.parameters(), lr=0.05, total_steps=60)
    losses = train(model, opt, 60, data=(x, y))
    assert losses[-1] < 0.5 * losses[0] and math.isfinite(losses[-1])
