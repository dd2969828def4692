"""Synthetic analyses and side inputs (LR map, noise, diff) for the report tests."""

from __future__ import annotations

import math

import numpy as np

from spectra.results import Analysis, LayerResult

EVIL = "<script>alert(1)</script>"


def make_analysis(blocks: int = 3, *, seed: int = 0, evil: bool = False, checkpoint: str = "model.safetensors",
                  shift: float = 0.0) -> Analysis:
    """A MiniLM-shaped analysis: 1 embedding, ``blocks`` x 6 linears, a pooler, one failed, one skipped."""
    rng = np.random.default_rng(seed)
    names = [("embeddings.word_embeddings", "embedding", 0, (1000, 64))]
    for b in range(blocks):
        for part, shape in (("attention.self.query", (64, 64)), ("attention.self.key", (64, 64)),
                            ("attention.self.value", (64, 64)), ("attention.output.dense", (64, 64)),
                            ("intermediate.dense", (256, 64)), ("output.dense", (64, 256))):
            names.append((f"encoder.layer.{b}.{part}", "linear", b + 1, shape))
    names.append(("pooler.dense", "linear", blocks + 1, (64, 64)))
    layers, evals = [], {}
    alphas = np.linspace(1.6, 7.5, len(names)) + shift
    for i, (name, kind, depth, shape) in enumerate(names):
        n, m = max(shape), min(shape)
        x = rng.standard_normal((n, m)) / math.sqrt(n)
        ev = np.sort(np.clip(np.linalg.eigvalsh(x.T @ x), 0, None))
        ev[-5:] *= np.linspace(3, 30, 5)  # a few spikes
        alpha = float(alphas[i])
        xmin = float(np.quantile(ev, 0.7))
        warning = "over-trained" if alpha < 2 else "under-trained" if alpha > 6 else ""
        layers.append(LayerResult(
            name=name, param=name + ".weight", kind=kind, shape=shape, depth=depth, N=n, M=m, Q=n / m,
            num_evals=m, lambda_max=float(ev[-1]), norm=float(ev.sum()), log_norm=math.log10(ev.sum()),
            log_spectral_norm=math.log10(ev[-1]), stable_rank=float(ev.sum() / ev[-1]), entropy=0.9,
            alpha=alpha, alpha_weighted=alpha * math.log10(ev[-1]), xmin=xmin, xmax=float(ev[-1]), D=0.05,
            num_pl_spikes=int((ev >= xmin).sum()), warning=warning,
            alpha_ci=(alpha - 0.2, alpha + 0.25) if i % 2 else None,
            sigma_mp=1.0, bulk_min=float(ev[0]), bulk_max=float(ev[-6]), num_spikes=5, mp_softrank=0.3))
        evals[name] = ev
    layers.append(LayerResult(name="encoder.layer.0.odd", param="encoder.layer.0.odd.weight", kind="linear",
                              shape=(3, 2), depth=1, status="failed", reason="too few eigenvalues for a fit"))
    layers.append(LayerResult(name="embeddings.position_ids", param="embeddings.position_ids", kind="skipped",
                              shape=(1, 512), depth=0, status="skipped",
                              reason="non-floating dtype int64 (buffers and quantized weights are not analyzed)"))
    if evil:
        ev = np.sort(rng.pareto(2.0, 64) + 1.0)
        layers.append(LayerResult(name=EVIL, param=EVIL + ".weight", kind="linear", shape=(64, 64),
                                  depth=blocks + 1, alpha=1.5, xmin=2.0, warning="over-trained", num_pl_spikes=20,
                                  reason='x"</script><img src=x onerror=alert(2)>'))
        evals[EVIL] = ev
    config = {"fit": "ww", "min_evals": 10, "note": 'quote " and </script>' if evil else "plain"}
    return Analysis(layers=tuple(layers), summary={"alpha": float(np.mean(alphas))}, config=config,
                    checkpoint=(checkpoint + EVIL) if evil else checkpoint, created="2026-11-22T20:00:00Z",
                    evals=evals)


def make_lrmap(analysis: Analysis) -> dict:
    layers = [{"name": r.name, "param": r.param, "depth": r.depth, "metric": "alpha", "value": r.alpha,
               "multiplier": round(0.5 + r.alpha / 6, 3), "reason": ""} for r in analysis.successful]
    return {"schema": "spectra.lrmap/1", "spectra_version": "0.1.0", "method": "tempbalance",
            "options": {"s": [0.5, 2.0]}, "source": "analysis.json", "default": 1.0,
            "params": {r["param"]: r["multiplier"] for r in layers}, "layers": layers}


def make_noise(analysis: Analysis) -> dict:
    layers = []
    for i, r in enumerate(analysis.successful):
        g2, tr = 10.0 ** (-i / 5), 1.0 + i
        layers.append({"name": r.name, "params": [r.param], "depth": r.depth, "numel": 100, "grad_sq": g2,
                       "trace_sigma": tr, "b_simple": tr / g2, "snr": g2 / tr, "grad_fro": math.sqrt(g2),
                       "grad_spectral": 0.5 * math.sqrt(g2), "grad_nuclear": 3 * math.sqrt(g2),
                       "status": "success", "reason": ""})
    layers.append({"name": "bad.layer", "params": ["bad.layer.weight"], "depth": 1, "numel": 4, "grad_sq": None,
                   "trace_sigma": 1.0, "b_simple": None, "snr": None, "grad_fro": None, "grad_spectral": None,
                   "grad_nuclear": None, "status": "failed", "reason": "negative |G|^2 estimate"})
    return {"schema": "spectra.noise/1", "spectra_version": "0.1.0", "created": "now", "task": "synthetic",
            "checkpoint": "model.pt", "source": "gradients", "config": {"batches": 4},
            "summary": {"b_simple": 123.4, "grad_sq": 0.01, "trace_sigma": 1.234, "snr": 0.0081}, "layers": layers}


def make_diff(analysis: Analysis) -> dict:
    layers = []
    for i, r in enumerate(analysis.successful):
        layers.append({"name": r.name, "param": r.param, "depth": r.depth, "kind": r.kind, "shape": list(r.shape),
                       "rel_update": 10.0 ** (-4 + i / 8), "spectral_ratio": 0.1, "sv_growth": 1.01,
                       "dw_stable_rank": 2.0 + i, "dw_effective_rank": 5.0, "subspace_overlap": 0.5 + i / 100,
                       "overlap_baseline": 0.1, "alpha_a": r.alpha, "alpha_b": r.alpha - 0.1, "delta_alpha": -0.1,
                       "status": "success", "reason": ""})
    return {"schema": "spectra.diff/1", "spectra_version": "0.1.0", "created": "now", "a": "a.pt", "b": "b.pt",
            "config": {}, "summary": {"median_rel_update": 1e-3}, "by_depth": [],
            "layers": layers, "mismatched": [{"param": "extra.weight", "reason": "only in B"}],
            "activations": {"config": {"k": 8}, "layers": [
                {"name": f"encoder.layer.{i}", "depth": i + 1, "tokens": 64, "dim": 64, "projection_baseline": 0.125,
                 "alignment_a": 0.5 + i / 10, "alignment_b": 0.6 + i / 10, "residual_energy_a": 0.3,
                 "residual_energy_b": 0.25, "projection_update_a": 0.4, "projection_update_b": 0.45}
                for i in range(2)]}}
