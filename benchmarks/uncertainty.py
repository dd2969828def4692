"""Coverage of spectra's confidence intervals on synthetic data whose truth is known.

Two parts, each a table of how often a nominal 95% interval contains the true value (target: every
setting within 93.5-96.5%; with T trials the Monte Carlo standard error is sqrt(p (1 - p) / T), about
1.1 points at T = 400):

* ``alpha_ci`` (``spectra analyze --bootstrap N``): Pareto samples with density ~ x^-alpha above 1
  (alpha in {2, 3, 4}, n in {100, 1000}), fitted with the fit spectra reports (``ww``, the default,
  and ``median``). The interval spectra reports (semi-parametric bootstrap, percentile) is compared
  with the nonparametric bootstrap read as a percentile interval (spectra's earlier default) and as a
  basic interval. Counts of intervals that miss their own estimate are listed too, and the three
  intervals on the real spectra of all-MiniLM-L6-v2 (no truth there: what a user would see).
* ``g2_ci``, ``trace_sigma_ci``, ``b_simple_ci`` (``spectra noise``): rounds of a synthetic
  per-example gradient model g_i = G + Sigma^(1/2) z_i in d = 256 dimensions with known |G|^2 and
  tr(Sigma) = 100 (a decaying diagonal Sigma), z Gaussian or Student-t (heavy tails); each round is
  n = 4 micro-batches of b = 4 examples, fed to :class:`spectra.core.noise.GradientNoise` exactly as
  ``spectra noise`` feeds it. An unbounded B_simple interval (null) counts as covering; its rate is
  listed.

    python benchmarks/uncertainty.py                  # writes reports/bench/uncertainty.md
    python benchmarks/uncertainty.py --quick          # a smoke run (few trials), prints only
    python benchmarks/uncertainty.py --workers 16 --trials 1000
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe  # noqa: E402  (shared by the scripts in benchmarks/)

from spectra._files import atomic_write  # noqa: E402
from spectra.core.noise import GradientNoise  # noqa: E402
from spectra.core.powerlaw import FITS, bootstrap_alpha, bootstrap_interval, bootstrap_replicates  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LEVEL = 0.95
TARGET = (0.935, 0.965)
ALPHA_METHODS = ("semi-parametric, percentile (spectra)", "nonparametric, percentile",
                 "nonparametric, basic")


# ----------------------------------------------------------------------------------- alpha_ci


def _alpha_trial(args: tuple) -> tuple[list[bool], list[bool]]:
    """One Pareto sample: (covers truth, contains own estimate) for each of ALPHA_METHODS."""
    alpha, n, fit_name, n_boot, trial = args
    rng = np.random.default_rng([int(alpha * 100), n, trial, 7 if fit_name == "ww" else 11])
    x = np.sort((1.0 - rng.random(n)) ** (-1.0 / (alpha - 1.0)))
    fit = FITS[fit_name](x)
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    spectra_ci = bootstrap_alpha(x, n_boot=n_boot, method=fit_name, level=LEVEL, generator=gen)
    reps = bootstrap_replicates(x, n_boot=n_boot, method=fit_name, resample="nonparametric", generator=gen)
    cis = [spectra_ci, bootstrap_interval(fit.alpha, reps, level=LEVEL, kind="percentile"),
           bootstrap_interval(fit.alpha, reps, level=LEVEL, kind="basic")]
    return ([lo <= alpha <= hi for lo, hi in cis], [lo <= fit.alpha <= hi for lo, hi in cis])


def alpha_coverage(trials: int, n_boot: int, pool, fits: tuple[str, ...]) -> list[dict]:
    rows = []
    for fit_name in fits:
        for n in (100, 1000):
            for alpha in (2.0, 3.0, 4.0):
                started = time.perf_counter()
                out = list(pool.map(_alpha_trial, [(alpha, n, fit_name, n_boot, t) for t in range(trials)],
                                    chunksize=max(1, trials // 64)))
                cover = np.array([c for c, _ in out], dtype=float).mean(0)
                own = np.array([o for _, o in out], dtype=float)
                rows.append({"fit": fit_name, "alpha": alpha, "n": n, "trials": trials, "cover": cover,
                             "miss_own": (1.0 - own).sum(0).astype(int), "seconds": time.perf_counter() - started})
                print(f"alpha_ci fit={fit_name} alpha={alpha:g} n={n}: "
                      + ", ".join(f"{c:.3f}" for c in cover), flush=True)
    return rows


def real_spectra(n_boot: int) -> list[dict]:
    """The three alpha intervals on every layer of all-MiniLM-L6-v2 (no truth: sanity on real spectra)."""
    from spectra import analyze
    from spectra._seeding import stream
    from spectra.demo import minilm_path

    result = analyze(minilm_path(), device="cpu")
    rows = []
    for rec in result.layers:
        if not rec.ok:
            continue
        x = result.evals[rec.name]
        fit = FITS["ww"](np.sort(x[x > 1e-5]))
        gen = stream(0, "bootstrap", rec.name)
        semi = bootstrap_replicates(x, n_boot=n_boot, generator=gen, fit=fit)
        non = bootstrap_replicates(x, n_boot=n_boot, resample="nonparametric", generator=gen)
        cis = [bootstrap_interval(fit.alpha, semi), bootstrap_interval(fit.alpha, non),
               bootstrap_interval(fit.alpha, non, kind="basic")]
        rows.append({"name": rec.name, "alpha": fit.alpha, "cis": cis})
    print(f"real spectra: {len(rows)} MiniLM layers", flush=True)
    return rows


# ----------------------------------------------------------------------------------- noise


def _noise_trial(args: tuple) -> tuple[list[bool], bool, bool]:
    """One experiment of ``rounds`` rounds: (covers |G|^2, tr(Sigma), B_simple), B_simple unbounded, reliable."""
    rounds, g2, dist, trial = args
    d, b, n_small, trace = 256, 4, 4, 100.0
    gen = torch.Generator().manual_seed(1_000_003 * trial + 7919 * rounds + int(g2 * 10) + (1 if dist != "gauss" else 0))
    var = 1.0 / torch.arange(1, d + 1, dtype=torch.float64).sqrt()
    var = var / var.sum() * trace
    mean = torch.randn(d, generator=gen, dtype=torch.float64)
    mean = mean / mean.norm() * math.sqrt(g2)
    z = torch.randn(rounds, n_small, b, d, generator=gen, dtype=torch.float64)
    if dist != "gauss":  # Student t with nu degrees of freedom, scaled to unit variance
        nu = float(dist[1:])
        chi2 = 2.0 * torch._standard_gamma(torch.full((rounds, n_small, b, 1), nu / 2, dtype=torch.float64),
                                           generator=gen)
        z = z / torch.sqrt(chi2 / nu) / math.sqrt(nu / (nu - 2.0))
    micro = (mean + z * var.sqrt()).mean(2)  # (rounds, n_small, d): the micro-batch gradients
    small, big = micro.square().sum(-1).mean(1), micro.mean(1).square().sum(-1)
    noise = GradientNoise(level=LEVEL)
    for r in range(rounds):
        noise.update({"w": small[r]}, {"w": big[r]}, b_small=b, b_big=n_small * b)
    st = noise.compute().total
    truth = {"g2_ci": g2, "trace_sigma_ci": trace, "b_simple_ci": trace / g2}
    covers = [getattr(st, k) is None or getattr(st, k)[0] <= v <= getattr(st, k)[1] for k, v in truth.items()]
    return covers, st.b_simple_ci is None, bool(st.reliable)


def noise_coverage(trials: int, pool) -> list[dict]:
    rows = []
    for dist in ("gauss", "t5"):
        for rounds in (8, 32):
            for g2 in (1.0, 10.0, 100.0):
                out = list(pool.map(_noise_trial, [(rounds, g2, dist, t) for t in range(trials)],
                                    chunksize=max(1, trials // 64)))
                cover = np.array([c for c, _, _ in out], dtype=float).mean(0)
                rows.append({"dist": dist, "rounds": rounds, "g2": g2, "trials": trials, "cover": cover,
                             "unbounded": float(np.mean([u for _, u, _ in out])),
                             "reliable": float(np.mean([r for _, _, r in out]))})
                print(f"noise dist={dist} rounds={rounds} |G|^2={g2:g}: " + ", ".join(f"{c:.3f}" for c in cover),
                      flush=True)
    return rows


# ----------------------------------------------------------------------------------- report


def _verdict(p: float, trials: int) -> str:
    lo, hi = TARGET
    if lo <= p <= hi:
        return "in target"
    off = lo - p if p < lo else p - hi
    se = math.sqrt(LEVEL * (1 - LEVEL) / trials)  # at the nominal level
    return f"{'under' if p < lo else 'over'} by {100 * off:.1f} pt ({off / se:.1f} SE)"


def _pct(p: float) -> str:
    return f"{100 * p:.1f}%"


def report(alpha_rows: list[dict], noise_rows: list[dict], n_boot: int, workers: int, seconds: float,
           real_rows: list[dict] = ()) -> str:
    lines = ["# Coverage of spectra's confidence intervals", "",
             "Produced by `python benchmarks/uncertainty.py` (see its docstring). Each cell is the share of "
             f"nominal {LEVEL:.0%} intervals that contain the known truth; target {_pct(TARGET[0])}-{_pct(TARGET[1])}. "
             "Monte Carlo standard error with T trials: sqrt(p (1 - p) / T), 1.1 points at T = 400.", "",
             "## alpha_ci (`spectra analyze --bootstrap N`)", "",
             f"Pareto samples, density ~ x^-alpha above 1; {n_boot} bootstrap refits per interval; the fit's xmin "
             "search is redone on every resample. `misses own` counts intervals (of all trials) that do not "
             "contain the sample's own estimate; spectra flags those in `alpha_ci_warning`.", "",
             "| fit | alpha | n | trials | " + " | ".join(ALPHA_METHODS) + " | spectra's interval | misses own (spectra / nonparametric percentile) |",
             "|---|---:|---:|---:|" + "---:|" * len(ALPHA_METHODS) + "---|---|"]
    for r in alpha_rows:
        cells = " | ".join(_pct(c) for c in r["cover"])
        lines.append(f"| {r['fit']} | {r['alpha']:g} | {r['n']} | {r['trials']} | {cells} | "
                     f"{_verdict(r['cover'][0], r['trials'])} | {r['miss_own'][0]} / {r['miss_own'][1]} |")
    ok = [r for r in alpha_rows if TARGET[0] <= r["cover"][0] <= TARGET[1]]
    if alpha_rows:
        means = np.mean([r["cover"] for r in alpha_rows], axis=0)
        spread = [max(abs(r["cover"][i] - LEVEL) for r in alpha_rows) for i in range(len(ALPHA_METHODS))]
        lines += ["", f"spectra's interval is in target in {len(ok)} of {len(alpha_rows)} settings.", "",
                  "Why this interval: averaged over the settings the three methods cover "
                  + ", ".join(f"{_pct(m)} ({name}; furthest {100 * d:.1f} pt from 95%)"
                              for m, name, d in zip(means, ALPHA_METHODS, spread)) + ". "
                  "A nonparametric resample repeats about a third of the eigenvalues, and ties in the tail move "
                  "the KS-selected xmin further than a fresh sample would; the semi-parametric resample (Clauset, "
                  "Shalizi & Newman 2009, sec. 4.1) keeps the observed eigenvalues below xmin and draws the tail "
                  "from the fitted power law, so it has no ties there, and every refit redoes the xmin search, so "
                  "xmin's uncertainty is carried. Quantiles are median-unbiased (Hyndman & Fan type 8): linearly "
                  "interpolated 2.5% / 97.5% points of 50 to 100 refits sit too far inside and lose 1-3 points of "
                  "coverage. The interval is for the alpha the chosen fit reports (`ww` by default, `median` with "
                  "`--fit median`)."]
        misses = [r for r in alpha_rows if r not in ok]
        if misses:
            lines += ["", "Outside the target: " + "; ".join(
                f"{r['fit']} alpha {r['alpha']:g} n {r['n']}: {_pct(r['cover'][0])}, {_verdict(r['cover'][0], r['trials'])}"
                for r in misses) + ". The band is +-1.4 SE around 95% at 400 trials, so a method with exactly 95% "
                "coverage falls outside it in about one setting in six, and beyond it by more than 1 SE in about "
                "one in sixty."]
            if any(r["cover"][0] > TARGET[1] for r in misses):
                lines += ["", "Over-coverage (intervals too wide, conservative). Our reading, not separately "
                          "tested: the body below xmin is resampled with replacement, and when a refit's KS search "
                          "moves xmin into the body its ties make the refitted alphas spread wider than alpha's "
                          "sampling distribution."]
            if any(r["cover"][0] < TARGET[0] for r in misses):
                lines += ["", "Under-coverage (intervals too narrow or off-centre): on small tails the Hill estimate "
                          "is biased upward, E[alpha - 1] = (alpha - 1) n_tail / (n_tail - 2) for a Pareto tail of "
                          "n_tail values (4% at the median fit's n_tail = 50), and a percentile interval reproduces "
                          "that bias instead of removing it; a basic interval removes it but fails on real "
                          "spectra (below)."]
    if real_rows:
        miss = [sum(not lo <= r["alpha"] <= hi for r in real_rows for lo, hi in [r["cis"][i]])
                for i in range(len(ALPHA_METHODS))]
        floor = [sum(r["cis"][i][0] <= 1.0 for r in real_rows) for i in range(len(ALPHA_METHODS))]
        width = [float(np.median([r["cis"][i][1] - r["cis"][i][0] for r in real_rows])) for i in range(len(ALPHA_METHODS))]
        lines += ["", f"### On real spectra: the {len(real_rows)} layers of all-MiniLM-L6-v2 (`ww` fit, "
                  f"{n_boot} refits)", "",
                  "No truth here; what a user would see. A lower bound at 1.0 is the basic interval's reflection "
                  "clipped at alpha = 1 (no information).", "",
                  "| | " + " | ".join(ALPHA_METHODS) + " |", "|---|" + "---:|" * len(ALPHA_METHODS),
                  "| intervals missing their own estimate | " + " | ".join(str(m) for m in miss) + " |",
                  "| lower bound at 1.0 | " + " | ".join(str(f) for f in floor) + " |",
                  "| median width | " + " | ".join(f"{w:.2f}" for w in width) + " |", ""]
        worst = max(real_rows, key=lambda r: max(abs(r["alpha"] - (lo + hi) / 2) for lo, hi in r["cis"]))
        lines += [f"Example, `{worst['name']}` (alpha {worst['alpha']:.2f}): "
                  + ", ".join(f"{name} [{lo:.2f}, {hi:.2f}]" for name, (lo, hi) in zip(ALPHA_METHODS, worst["cis"]))
                  + ".", "",
                  (f"On the Pareto samples above the nonparametric basic interval is in target in "
                     f"{sum(TARGET[0] <= r['cover'][2] <= TARGET[1] for r in alpha_rows)} of {len(alpha_rows)} "
                     f"settings and spectra's in {len(ok)}. " if alpha_rows else "")
                  + "On real spectra, though, the ties of nonparametric resamples give the refitted "
                  "alphas a long upper tail that the reflection turns into lower bounds clipped at 1 and intervals "
                  "that exclude the estimate; the semi-parametric resample has no ties in the tail. spectra keeps "
                  "the semi-parametric percentile interval and reports its misses above; the other two stay "
                  "available (`bootstrap_alpha(..., resample=, interval=)`)."]
    lines += ["", "## g2_ci, trace_sigma_ci, b_simple_ci (`spectra noise`)", "",
              "Synthetic per-example gradients in d = 256 with tr(Sigma) = 100 and |G|^2 as listed (B_simple = "
              "100 / |G|^2); rounds of 4 micro-batches of 4 examples fed to `GradientNoise`. `t5`: Student-t "
              "noise with 5 degrees of freedom (heavy tails, finite fourth moment). A null B_simple interval "
              "(|G|^2 not resolved) counts as covering.", "",
              "| noise | rounds | \\|G\\|^2 | trials | g2_ci | trace_sigma_ci | b_simple_ci | b_simple_ci null | reliable | verdict |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in noise_rows:
        verdicts = [f"{name}: {_verdict(c, r['trials'])}" for name, c in zip(("g2", "trace", "B"), r["cover"])
                    if not TARGET[0] <= c <= TARGET[1]]
        lines.append(f"| {r['dist']} | {r['rounds']} | {r['g2']:g} | {r['trials']} | "
                     + " | ".join(_pct(c) for c in r["cover"])
                     + f" | {_pct(r['unbounded'])} | {_pct(r['reliable'])} | {'; '.join(verdicts) or 'in target'} |")
    heavy = [r for r in noise_rows if not all(TARGET[0] <= c <= TARGET[1] for c in r["cover"])]
    if noise_rows:
        lines += ["", "How the noise intervals are built: each round gives unbiased |G|^2 and tr(Sigma) estimates; "
                  "`g2_ci` and `trace_sigma_ci` are Student intervals mean -+ t_{R-1} s / sqrt(R) over the R rounds, "
                  "`b_simple_ci` is Fieller's interval for the ratio of the two means (null when |G|^2 is not "
                  "significantly positive). Both are exact when the per-round estimates are normal."]
        if heavy:
            lines += ["", "Outside the target: " + "; ".join(
                f"{r['dist']}, {r['rounds']} rounds, |G|^2 {r['g2']:g}: "
                + ", ".join(f"{name} {_pct(c)}" for name, c in zip(("g2", "trace", "B"), r["cover"])
                            if not TARGET[0] <= c <= TARGET[1]) for r in heavy) + ". "
                "With heavy-tailed per-example gradients (Student t, 5 degrees of freedom) the per-round tr(Sigma) "
                "estimates are sums of squares of heavy-tailed variables: right-skewed with a large fourth moment, "
                "so the sample spread of 8-32 rounds understates their variance and the intervals for tr(Sigma) "
                "and B_simple are too narrow; more rounds help only slowly. Deviations under 2 SE in the Gaussian "
                "rows are Monte Carlo noise (see above). Treat `reliable` as necessary, not sufficient, when gradient noise is "
                "heavy-tailed."]
    lines += ["", f"Run time {seconds / 60:.1f} min with {workers} worker processes.", "", "## Machine", "", describe(), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=400, help="trials per setting (>= 400 for the report)")
    parser.add_argument("--boot", type=int, default=100, help="bootstrap refits per alpha interval")
    parser.add_argument("--fits", default="ww,median", help="comma-separated fits to measure alpha_ci for")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true", help="40 trials, no report file")
    parser.add_argument("--skip-alpha", action="store_true")
    parser.add_argument("--skip-noise", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench" / "uncertainty.md")
    args = parser.parse_args(argv)
    trials = 40 if args.quick else args.trials
    torch.set_num_threads(1)
    started = time.perf_counter()
    with ProcessPoolExecutor(args.workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        alpha_rows = [] if args.skip_alpha else alpha_coverage(trials, args.boot, pool, tuple(args.fits.split(",")))
        noise_rows = [] if args.skip_noise else noise_coverage(trials, pool)
    real_rows = [] if args.skip_alpha else real_spectra(args.boot)
    text = report(alpha_rows, noise_rows, args.boot, args.workers, time.perf_counter() - started, real_rows)
    print(text)
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(args.out, text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
