"""Optimizer step time: DALS against torch AdamW (foreach) on the same model and gradients.

Times ``optimizer.step()`` alone (gradients are filled once with fixed random values, so the
backward pass is not measured), as the median over repeated steps after a warm-up. The target in
the DALS issue is a ratio of at most 1.5x against ``torch.optim.AdamW(foreach=True)``.

    python benchmarks/optim_step.py                      # CPU, writes reports/bench/optim_step.md
    python benchmarks/optim_step.py --device cuda --width 1024 --blocks 12
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spectra.optim import DALS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def describe_machine() -> str:
    try:
        from _machine import describe  # shared helper next to this script, when present

        return describe()
    except ImportError:  # pragma: no cover - fallback when the helper is absent
        cpu = "unknown"
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
        except OSError:
            pass
        return f"- CPU: {cpu}, {os.cpu_count()} logical cores\n- Python {platform.python_version()}, torch {torch.__version__}"


def build_model(width: int, blocks: int) -> nn.Module:
    """A transformer-shaped MLP stack: embedding, ``blocks`` x (fc1, fc2, LayerNorm), head."""
    layers: dict[str, nn.Module] = {"embed": nn.Embedding(1000, width)}
    for i in range(blocks):
        layers[f"blocks_{i}_fc1"] = nn.Linear(width, 4 * width)
        layers[f"blocks_{i}_fc2"] = nn.Linear(4 * width, width)
        layers[f"blocks_{i}_ln"] = nn.LayerNorm(width)
    layers["head"] = nn.Linear(width, 10)
    return nn.ModuleDict(layers)


def depth_groups(model: nn.Module) -> list[dict]:
    """One param group per module with its depth (what spectra.optim.param_groups would give)."""
    names = list(model.keys())
    return [{"params": list(model[n].parameters()), "depth": i} for i, n in enumerate(names)]


def time_interleaved(makers: dict, model: nn.Module, device: torch.device, steps: int,
                     warmup: int) -> dict[str, float]:
    """Median seconds per ``step()`` of each optimizer, timed round-robin so load noise is shared.

    All optimizers act on the same parameters with the same fixed gradients (the parameter values
    drift, which does not change the work done per step).
    """
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device, p.dtype)
    opts = {label: make(model) for label, make in makers.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for opt in opts.values():
        for _ in range(warmup):
            opt.step()
    times: dict[str, list[float]] = {label: [] for label in opts}
    for _ in range(steps):
        for label, opt in opts.items():
            sync()
            start = time.perf_counter()
            opt.step()
            sync()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(ts) for label, ts in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "optim_step.md")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.width, args.blocks).to(device)
    numel = sum(p.numel() for p in model.parameters())
    total = 10_000
    cases = {
        "torch AdamW (foreach)": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.01, foreach=True),
        "torch SGD momentum (foreach)": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, foreach=True),
        "DALS, Adam base (foreach)": lambda m: DALS(depth_groups(m), lr=1e-3, base="adam", weight_decay=0.01,
                                                    warmup=0, total_steps=total, foreach=True),
        "DALS, SGD base (foreach)": lambda m: DALS(depth_groups(m), lr=0.05, weight_decay=0.01, warmup=0,
                                                   total_steps=total, foreach=True),
        "DALS, Adam base, components off (foreach)": lambda m: DALS(
            depth_groups(m), lr=1e-3, base="adam", weight_decay=0.01, schedule=False, grokfast_lamb=0.0,
            trust_ratio=False, total_steps=total, foreach=True),
        "DALS, Adam base (single-tensor, the CPU default)": lambda m: DALS(depth_groups(m), lr=1e-3, base="adam", weight_decay=0.01,
                                                          warmup=0, total_steps=total, foreach=False),
    }
    medians = time_interleaved(cases, model, device, args.steps, args.warmup)
    rows = list(medians.items())
    for label, seconds in rows:
        print(f"{label:45s} {seconds * 1e3:9.2f} ms", flush=True)
    ref = rows[0][1]
    sgd_ref = rows[1][1]
    lines = [
        "# Optimizer step time: DALS vs torch AdamW",
        "",
        f"Model: embedding + {args.blocks} x (Linear {args.width}->{4 * args.width}, Linear "
        f"{4 * args.width}->{args.width}, LayerNorm) + head, {numel / 1e6:.1f} M parameters, float32, "
        f"device `{args.device}`; {len(list(model.parameters()))} tensors in {len(depth_groups(model))} depth groups.",
        f"Median of {args.steps} `step()` calls after {args.warmup} warm-up steps, gradients fixed "
        "(backward not timed); the optimizers are timed round-robin on shared parameters. All DALS components on unless stated (Grokfast after warmup, trust ratio, "
        "cosine schedule, decoupled decay). Target: DALS at most 1.5x torch AdamW (foreach).",
        "",
        "| optimizer | ms / step | vs AdamW (foreach) | vs SGD (foreach) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {label} | {s * 1e3:.2f} | {s / ref:.2f}x | {s / sgd_ref:.2f}x |" for label, s in rows]
    lines += ["", "Machine:", "", describe_machine(), f"- torch {torch.__version__}, command: "
              f"`python benchmarks/optim_step.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip(), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
