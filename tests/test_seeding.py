"""Per-layer random streams: bootstrap intervals and shuffles do not depend on order, format or process."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import save_file

from spectra import analyze
from spectra._seeding import derive_seed, stream


def _weights():
    gen = torch.Generator().manual_seed(0)
    # insertion order is not sorted order: a .bin keeps it, a .safetensors file sorts the keys
    names = ["encoder.layer.1.out", "encoder.layer.0.out", "head", "embed"]
    return {f"{n}.weight": torch.randn(48, 32, generator=gen) @ torch.diag(torch.linspace(3, 0.2, 32))
            for n in names}


def _by_layer(result):
    return {r.name: (r.alpha, r.alpha_ci, r.rand_distance, r.rand_lambda_max) for r in result.layers}


def test_bin_and_safetensors_give_identical_intervals_and_randomization(tmp_path):
    weights = _weights()
    torch.save(weights, tmp_path / "model.bin")
    save_file(weights, tmp_path / "model.safetensors")
    opts = dict(bootstrap=12, randomize=True, seed=5, device="cpu")
    a = analyze(tmp_path / "model.bin", **opts)
    b = analyze(tmp_path / "model.safetensors", **opts)
    assert _by_layer(a) == _by_layer(b)
    assert all(r.alpha_ci is not None for r in a.layers)
    for r in a.layers:  # an interval that misses its own estimate is flagged, one that holds it is not
        assert (r.alpha_ci_warning == "") == (r.alpha_ci[0] <= r.alpha <= r.alpha_ci[1])
        assert "alpha_ci_warning" in r.to_dict()
    # one layer alone (what one rank of a split run computes) gets the same numbers
    alone = analyze(tmp_path / "model.safetensors", include=("^head",), **opts)
    assert _by_layer(alone)["head"] == _by_layer(a)["head"]
    # the streams do depend on the seed, and bootstrap and shuffle streams are separate
    other = analyze(tmp_path / "model.bin", **dict(opts, seed=6))
    assert _by_layer(other)["head"][1] != _by_layer(a)["head"][1]
    no_boot = analyze(tmp_path / "model.bin", **dict(opts, bootstrap=0))
    assert _by_layer(no_boot)["head"][2] == _by_layer(a)["head"][2]


def test_derived_seed_is_stable_across_processes():
    code = "from spectra._seeding import derive_seed; print(derive_seed(3, 'bootstrap', 'layers.0.q'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED=str(h))).stdout.strip() for h in (1, 2)}
    assert outs == {str(derive_seed(3, "bootstrap", "layers.0.q"))}
    assert derive_seed(3, "bootstrap", "a") != derive_seed(3, "randomize", "a") != derive_seed(4, "randomize", "a")
    assert 0 <= derive_seed(2**40, "x") < 2**63
    assert torch.equal(torch.rand(3, generator=stream(1, "a")), torch.rand(3, generator=stream(1, "a")))
