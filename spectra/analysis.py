"""``spectra.analyze``: stream a checkpoint and compute every weight matrix's spectral metrics.

Data flow: checkpoint -> (key, tensor) one at a time (:mod:`spectra.io`) -> layer rules and matrix
views (:mod:`spectra.layers`) -> eigenvalues, power-law fit, norms, RMT metrics (:mod:`spectra.core`)
-> :class:`~spectra.results.Analysis`. Only one tensor (or, on a GPU, one small batch of equally
shaped tensors) is in memory at a time, so peak memory is set by the largest layer, not by the model.

Every tensor key ends up somewhere: matrices as layer records (``success``, ``failed`` with a reason,
or ``skipped`` with a reason), vectors (biases, norm weights) in ``Analysis.attached`` under the layer
they belong to, buffers as ``skipped`` records with the reason ``buffer``. Records follow model order
(:func:`spectra.structure.describe`; ``config["order"]`` says where it came from).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import numpy as np
import torch

from . import layers as L
from ._device import check_device, resolve_device
from ._seeding import stream
from .core.esd import SOLVERS, NonFiniteMatrixError, eigenvalues, eigenvalues_batched, rank_tolerance
from .core.powerlaw import FITS, bootstrap_alpha, fit_power_law, interval_warning
from .core.rmt import jensen_shannon_distance, matrix_entropy, mp_fit, norm_metrics
from .errors import CheckpointError, ConfigError, Interrupted
from .results import Analysis, LayerResult

__all__ = ["AnalyzeConfig", "analyze", "analyze_matrix", "summarize"]

_log = logging.getLogger(__name__)
_DTYPES = {"float64": torch.float64, "float32": torch.float32, "fp64": torch.float64, "fp32": torch.float32,
           "double": torch.float64, "float": torch.float32}
ProgressFn = Callable[[int, int, str], None]
#: Most bootstrap refits per layer: each draws n_boot x n indices at once (10,000 x 4096 is 330 MB).
MAX_BOOTSTRAP = 10_000


@dataclass(frozen=True)
class AnalyzeConfig:
    """Options of :func:`analyze`, validated at construction.

    Attributes:
        include, exclude: regular expressions searched in each tensor key; a key must match some
            ``include`` (when given) and no ``exclude``. Excluded layers are listed as skipped.
        min_evals: layers with fewer eigenvalues are skipped (WeightWatcher 0.7.7's default, 8).
        max_evals: optional upper bound on eigenvalues per layer (None: no bound; WeightWatcher
            silently drops layers above 15000 eigenvalues or N > 50000, spectra does not).
        fit: power-law fit name (``ww`` or ``median``).
        fix_fingers: None or ``clip_xmax``.
        bootstrap: number of bootstrap refits for ``alpha_ci`` (0 = off).
        mp_fit: fit a Marchenko-Pastur bulk (sigma_mp, num_spikes, mp_softrank, bulk edges).
        randomize: also analyse an element-shuffled copy (rand_lambda_max, num_traps, rand_distance).
        compare_distributions: power law vs lognormal and exponential at the fitted xmin (needs the
            ``powerlaw`` package).
        dtype, device, solver: eigen-solver precision, device (auto|cpu|cuda) and method (gram|svd).
        seed: seed of the bootstrap draws and shuffles; each layer draws from its own stream, derived
            from the seed and the layer's name, so results do not depend on processing order.
        batch_size: equally shaped matrices solved together (default: 1 on CPU, 16 on CUDA).
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_evals: int = 8
    max_evals: int | None = None
    fit: str = "ww"
    fix_fingers: str | None = None
    max_fingers: int = 10
    finger_thresh: float = 1.0
    bootstrap: int = 0
    ci_level: float = 0.95
    mp_fit: bool = False
    randomize: bool = False
    compare_distributions: bool = False
    dtype: str = "float64"
    device: str = "auto"
    solver: str = "gram"
    seed: int = 0
    batch_size: int | None = None
    over_trained: float = 2.0
    under_trained: float = 6.0

    def __post_init__(self) -> None:
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            value = tuple(v for v in (value or ()) if v)
            object.__setattr__(self, name, value)
            for pattern in value:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(f"invalid --{name} regex {pattern!r}: {exc}") from None
        if self.fit not in FITS:
            raise ConfigError(f"unknown fit {self.fit!r}; choose one of: {', '.join(sorted(FITS))}")
        if self.fix_fingers not in (None, "clip_xmax"):
            raise ConfigError(f"unknown fix_fingers {self.fix_fingers!r}; the only option is clip_xmax")
        if self.dtype not in _DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}; choose float64 or float32")
        check_device(self.device)
        if self.solver not in SOLVERS:
            raise ConfigError(f"unknown solver {self.solver!r}; choose one of: {', '.join(SOLVERS)}")
        if self.min_evals < 2:
            raise ConfigError(f"min_evals must be >= 2, got {self.min_evals}")
        if self.max_evals is not None and self.max_evals < self.min_evals:
            raise ConfigError(f"max_evals ({self.max_evals}) is below min_evals ({self.min_evals})")
        if not 0 <= self.bootstrap <= MAX_BOOTSTRAP:
            raise ConfigError(f"bootstrap must be between 0 and {MAX_BOOTSTRAP:,} refits, got {self.bootstrap:,}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be between 0 and 2**63 - 1, got {self.seed}")
        if not 0 < self.ci_level < 1:
            raise ConfigError(f"ci_level must be in (0, 1), got {self.ci_level}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def resolve_device(self) -> torch.device:
        return resolve_device(self.device)

    def selects(self, key: str) -> bool:
        if self.include and not any(re.search(p, key) for p in self.include):
            return False
        return not any(re.search(p, key) for p in self.exclude)


# --------------------------------------------------------------------------- one matrix


def _label(alpha: float, cfg: AnalyzeConfig) -> str:
    if alpha < cfg.over_trained:
        return "over-trained"
    if alpha > cfg.under_trained:
        return "under-trained"
    return ""


def analyze_matrix(
    evals: torch.Tensor,
    base: dict[str, Any],
    cfg: AnalyzeConfig,
    *,
    matrix: torch.Tensor | None = None,
    scale: float = 1.0,
) -> LayerResult:
    """Metrics of one matrix from its eigenvalues (and the matrix itself for ``randomize``).

    ``base`` carries the identity fields (name, param, kind, shape, depth, N, M, dtype, expert);
    ``scale`` is the factor already applied to ``evals`` (0.5 for conv kernels), reapplied to the
    shuffled matrix's spectrum. Bootstrap draws and shuffles come from streams derived from
    ``cfg.seed`` and the layer's name (:func:`spectra._seeding.stream`), so a layer's numbers do not
    depend on which layers ran before it, in which file format, process or rank.
    """
    ev = evals.detach().to("cpu", torch.float64).numpy()
    N, M = base["N"], base["M"]
    record: dict[str, Any] = dict(base, Q=N / M, num_evals=int(ev.size), fit=cfg.fit)
    lmax = float(ev[-1]) if ev.size else 0.0
    if not ev.size or lmax <= 0:
        return LayerResult(**record, status="failed", reason="all eigenvalues are zero (a zero matrix)")
    rank = int(np.count_nonzero(ev > rank_tolerance(lmax, N, M, cfg.torch_dtype, cfg.solver)))
    # float32 eigenvalues reach the fit as float32: the median fit then computes as its reference does
    fit = fit_power_law(evals.detach().cpu().numpy(), method=cfg.fit, fix_fingers=cfg.fix_fingers,
                        max_fingers=cfg.max_fingers, finger_thresh=cfg.finger_thresh)
    record.update(norm_metrics(ev, fit.alpha if fit.ok else math.nan))
    record.update(matrix_rank=rank, entropy=matrix_entropy(ev, rank))
    if fit.ok:
        record.update(alpha=fit.alpha, xmin=fit.xmin, xmax=fit.xmax, D=fit.D, sigma=fit.sigma,
                      num_pl_spikes=fit.num_pl_spikes, warning=_label(fit.alpha, cfg))
        if cfg.fix_fingers:
            record.update(num_fingers=fit.num_fingers, raw_alpha=fit.raw_alpha)
        if cfg.bootstrap:
            record["alpha_ci"] = bootstrap_alpha(ev, n_boot=cfg.bootstrap, method=cfg.fit, level=cfg.ci_level,
                                                 generator=stream(cfg.seed, "bootstrap", base["name"]))
            record["alpha_ci_warning"] = interval_warning(fit.alpha, record["alpha_ci"])
        if cfg.compare_distributions:
            record["compare"] = compare_distributions(ev, fit.xmin)
    else:
        record.update(status="failed", reason=f"power-law fit failed: {fit.reason}")
    if cfg.mp_fit:
        mp = mp_fit(ev, N, M)
        record.update(sigma_mp=mp.sigma_mp, num_spikes=mp.num_spikes, mp_softrank=mp.mp_softrank,
                      bulk_min=mp.bulk_min, bulk_max=mp.bulk_max)
    if cfg.randomize and matrix is not None:
        record.update(_randomized(matrix, ev, N, M, cfg, stream(cfg.seed, "randomize", base["name"]), scale))
    return LayerResult(**record)


def _randomized(matrix, ev, N, M, cfg, generator, scale) -> dict[str, Any]:
    """Element-shuffled ESD: keeps the entry distribution, destroys correlations (Martin & Mahoney)."""
    flat = matrix.reshape(-1)
    perm = torch.randperm(flat.numel(), generator=generator).to(flat.device)
    shuffled = flat[perm].reshape(matrix.shape)
    rand = eigenvalues(shuffled, dtype=cfg.torch_dtype, solver=cfg.solver).cpu().numpy() * scale
    mp = mp_fit(rand, N, M)
    return {
        "rand_lambda_max": float(rand[-1]) if rand.size else math.nan,
        "num_traps": mp.num_spikes,
        "rand_distance": jensen_shannon_distance(ev, rand),
    }


def compare_distributions(ev: np.ndarray, xmin: float) -> dict[str, dict[str, float]]:
    """Log-likelihood ratio R and p-value of the power law against lognormal and exponential tails.

    Uses the ``powerlaw`` package (Alstott et al. 2014) at the fitted xmin (no xmin search), with the
    alpha range opened to [1, 100] (powerlaw 2.0 otherwise caps alpha below 3). R > 0 favours the
    power law; p is the significance of the sign of R (Vuong's test, normalised ratio).
    """
    from .errors import require

    powerlaw = require("powerlaw", "oracle")
    import warnings

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fit = powerlaw.Fit(ev[ev > 0], xmin=xmin, verbose=False, parameter_ranges={"alpha": [1.0, 100.0]})
        out = {}
        for dist in ("lognormal", "exponential"):
            try:
                R, p = fit.distribution_compare("power_law", dist, normalized_ratio=True)
                out[dist] = {"R": float(R), "p": float(p)}
            except Exception as exc:  # the package raises bare errors on degenerate tails
                _log.debug("distribution comparison with %s failed: %s", dist, exc)
                out[dist] = {"R": math.nan, "p": math.nan}
    return out


# --------------------------------------------------------------------------- the model


@dataclass
class _Job:
    base: dict[str, Any]
    matrix: torch.Tensor
    scale: float
    evals: torch.Tensor | None = field(default=None)


def analyze(
    source: Any,
    config: AnalyzeConfig | None = None,
    *,
    trust_pickle: bool = False,
    progress: ProgressFn | None = None,
    **options: Any,
) -> Analysis:
    """Analyse every weight matrix of a checkpoint, state dict or ``nn.Module``.

    Args:
        source: a path (safetensors file or directory, torch file, HF directory), a state dict or a
            module. See :func:`spectra.io.open_checkpoint`.
        config: an :class:`AnalyzeConfig`; or pass its fields as keyword ``options``.
        trust_pickle: allow full pickle loading of torch files (only for your own files).
        progress: called as ``progress(done, total, label)`` after each tensor.

    Returns:
        :class:`~spectra.results.Analysis` with one record per matrix (expert stacks give one per
        expert) and eigenvalues in ``.evals``.

    Raises:
        :class:`~spectra.errors.Interrupted` on Ctrl-C, carrying the partial Analysis: finished
        layers as computed, the others ``skipped`` with the reason "not analysed: the run was
        interrupted", and ``summary["partial"] = True``.

    >>> import torch
    >>> result = analyze({"fc.weight": torch.randn(64, 32), "fc.bias": torch.zeros(64)})
    >>> result.layers[0].name, result.layers[0].status, result.attached
    ('fc', 'success', {'fc.bias': 'fc'})
    """
    from .io import open_checkpoint
    from .structure import describe

    cfg = config if config is not None else AnalyzeConfig(**options)
    if config is not None and options:
        raise ConfigError("pass either config or keyword options, not both")
    device = cfg.resolve_device()
    batch_size = cfg.batch_size or (16 if device.type == "cuda" else 1)
    started = time.perf_counter()
    with open_checkpoint(source, trust_pickle=trust_pickle) as ckpt:
        structure = describe(ckpt)
        keys = list(structure.keys)
        specs = [L.classify(k, info.shape, info.dtype, buffer=structure.is_buffer(k),
                            module_kind=structure.module_kind(k)) for k, info in ((k, ckpt.info(k)) for k in keys)]
        layer_specs = [s for s in specs if s.kind != "vector"]
        depths = L.assign_depths([s.name for s in layer_specs], [s.kind for s in layer_specs])
        analysable = {s.name for s in layer_specs if s.is_layer}
        vectors = {s.key for s in specs if s.kind == "vector"}
        attached = L.attach_vectors(keys, analysable, vectors)
        owned: dict[str, list[str]] = {}  # layer name -> its vector keys, inverted once
        for key, owner in attached.items():
            owned.setdefault(owner, []).append(key)
        num_params = sum(math.prod(s.shape) for s in specs if s.kind != "buffer")
        records: list[LayerResult] = []
        evals_out: dict[str, np.ndarray] = {}
        pending: list[_Job] = []

        def solve(jobs: list[_Job]) -> list[torch.Tensor | None]:
            """Eigenvalues per job; None for a matrix with NaN/inf (found on the Gram diagonal)."""
            try:
                if len(jobs) > 1:
                    return eigenvalues_batched([j.matrix for j in jobs], dtype=cfg.torch_dtype, device=device,
                                               solver=cfg.solver)
                return [eigenvalues(jobs[0].matrix, dtype=cfg.torch_dtype, device=device, solver=cfg.solver)]
            except NonFiniteMatrixError:
                if len(jobs) == 1:
                    return [None]
                return [ev for job in jobs for ev in solve([job])]

        def flush() -> None:
            if not pending:
                return
            for job, ev in zip(pending, solve(pending)):
                if ev is None:
                    bad = int((~torch.isfinite(job.matrix)).sum())
                    records.append(LayerResult(**job.base, Q=job.base["N"] / job.base["M"],
                                               num_evals=job.base["M"] * (job.matrix.shape[0] if job.matrix.dim() == 3 else 1),
                                               status="skipped", reason=f"{bad} non-finite values (NaN or inf)"))
                    continue
                ev = ev * job.scale
                rec = analyze_matrix(ev, job.base, cfg, matrix=job.matrix if cfg.randomize else None,
                                     scale=job.scale)
                records.append(rec)
                evals_out[rec.name] = ev.cpu().numpy()
            pending.clear()

        interrupted = False
        try:
            for done, spec in enumerate(specs, 1):
                if spec.kind != "vector":
                    for job_or_record in _jobs(spec, ckpt, depths, tuple(owned.get(spec.name, ())), cfg):
                        if isinstance(job_or_record, LayerResult):
                            flush()
                            records.append(job_or_record)
                            continue
                        job = job_or_record
                        if pending and (tuple(pending[0].matrix.shape) != tuple(job.matrix.shape)
                                        or len(pending) >= batch_size or job.matrix.dim() != 2):
                            flush()
                        pending.append(job)
                        if job.matrix.dim() != 2 or batch_size == 1:
                            flush()
                if progress is not None:
                    progress(done, len(specs), spec.key)
            flush()
        except KeyboardInterrupt:  # keep what was finished; every other layer is listed as not analysed
            interrupted = True
            records += _not_reached(layer_specs, depths, records, pending)
        checkpoint_name = ckpt.path
    elapsed = time.perf_counter() - started
    summary = summarize(records, attached, num_params, elapsed)
    config_dict = asdict(cfg)
    config_dict["device"] = str(device)
    config_dict["order"], config_dict["order_source"] = structure.order, structure.source
    result = Analysis(
        layers=tuple(records), summary=summary, config=config_dict, checkpoint=checkpoint_name,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), attached=attached, evals=evals_out,
    )
    if interrupted:
        summary["partial"] = True
        _log.info("interrupted: %d of %d layers analysed", summary["num_success"] + summary["num_failed"],
                  len(layer_specs))
        raise Interrupted(result) from None
    return result


INTERRUPTED = "not analysed: the run was interrupted"


def _not_reached(specs: list[L.LayerSpec], depths: dict[str, int], records: list[LayerResult],
                 pending: list[_Job]) -> list[LayerResult]:
    """Skipped records for the matrices an interrupted run did not finish (never drop silently)."""
    out = [LayerResult(**job.base, status="skipped", reason=INTERRUPTED) for job in pending]
    pending.clear()
    reached = {rec.param for rec in records} | {rec.param for rec in out}
    for spec in specs:
        if spec.key not in reached:
            out.append(LayerResult(name=spec.name, param=spec.key, kind=spec.kind, shape=spec.shape,
                                   depth=depths[spec.name], dtype=spec.dtype, status="skipped",
                                   reason=INTERRUPTED if spec.is_layer else spec.reason))
    return out


def _jobs(spec: L.LayerSpec, ckpt, depths, owned: tuple[str, ...], cfg: AnalyzeConfig) -> Iterable[_Job | LayerResult]:
    """Turn one layer tensor into eigen-solver jobs, or into skipped records with reasons."""
    base = dict(name=spec.name, param=spec.key, kind=spec.kind, shape=spec.shape, depth=depths[spec.name],
                dtype=spec.dtype, attached=owned)
    if not spec.is_layer:
        yield LayerResult(**base, status="skipped", reason=spec.reason)
        return
    if not cfg.selects(spec.key):
        yield LayerResult(**base, status="skipped", reason="excluded by --include/--exclude")
        return
    try:
        tensor = ckpt.get(spec.key)
    except CheckpointError as exc:  # one unreadable tensor must not lose the layers already done
        _log.warning("%s", exc)
        yield LayerResult(**base, status="skipped", reason=f"unreadable: {exc}")
        return
    for name, expert, mat, scale in L.matrices(spec, tensor):
        N, M = max(mat.shape[-2:]), min(mat.shape[-2:])
        if scale != 1.0 and cfg.solver == "svd":  # the reference scales the kernel, not the eigenvalues
            mat, scale = mat.to(cfg.torch_dtype) * math.sqrt(scale), 1.0
        n_evals = M * (mat.shape[0] if mat.dim() == 3 else 1)
        rec_base = dict(base, name=name, expert=expert, N=N, M=M)
        if n_evals < cfg.min_evals:
            yield LayerResult(**rec_base, Q=N / M, num_evals=n_evals, status="skipped",
                              reason=f"too small: {n_evals} eigenvalues < min_evals {cfg.min_evals}")
            continue
        if cfg.max_evals is not None and n_evals > cfg.max_evals:
            yield LayerResult(**rec_base, Q=N / M, num_evals=n_evals, status="skipped",
                              reason=f"too large: {n_evals} eigenvalues > max_evals {cfg.max_evals}")
            continue
        yield _Job(rec_base, mat, scale)  # NaN/inf are caught by the solver (see flush)


_SUMMARY_METRICS = ("alpha", "alpha_weighted", "log_norm", "log_spectral_norm", "log_alpha_norm",
                    "stable_rank", "entropy", "mp_softrank")


def summarize(records: Iterable[LayerResult], attached: dict, num_params: int, elapsed: float) -> dict[str, Any]:
    """Model summary: mean and median of each metric over successful fits only, and counts.

    Failed and skipped layers never enter a mean (WeightWatcher averages alpha = -1 in).
    """
    records = list(records)
    ok = [r for r in records if r.ok]
    summary: dict[str, Any] = {
        "num_layers": len(records),
        "num_success": len(ok),
        "num_failed": sum(r.status == "failed" for r in records),
        "num_skipped": sum(r.status == "skipped" for r in records),
        "num_under_trained": sum(r.warning == "under-trained" for r in records),
        "num_over_trained": sum(r.warning == "over-trained" for r in records),
        "num_vectors": len(attached),
        "num_buffers": sum(r.kind == "buffer" for r in records),
        "num_params": int(num_params),
        "seconds": round(elapsed, 3),
    }
    for metric in _SUMMARY_METRICS:
        values = np.array([getattr(r, metric) for r in ok], dtype=np.float64)
        values = values[np.isfinite(values)]
        summary[metric] = float(values.mean()) if values.size else math.nan
        summary[f"{metric}_median"] = float(np.median(values)) if values.size else math.nan
    return summary
