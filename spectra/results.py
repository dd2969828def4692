"""Per-layer records, the versioned ``spectra.analysis/1`` file and its eigenvalue file.

A :class:`LayerResult` is one analysed matrix (a Linear, an Embedding, a pooled convolution, one
expert of a mixture-of-experts stack) or one tensor that was looked at and skipped. Missing numbers
are ``NaN`` in Python and ``null`` in JSON, never ``-1``. Column names follow WeightWatcher where the
meaning is the same, so a user can switch tools without relearning the table.

Every versioned file type (this one, ``LRMap``, ``NoiseResult``, ``DiffResult``, the run files)
is a :class:`~spectra.records.ResultFile`; this module re-exports that base and :func:`load`.
Reading a file checks every field against its type and the rules given with ``checked``
(alpha > 0, counts >= 0, ``alpha_ci`` a pair, ``status`` one of :data:`STATUSES`, ...).

Eigenvalue files (``*.esd.npz``, :func:`load_esd`) are read without trusting the file.
``numpy.load`` would inflate every member however small the file (a 2.9 MB deflate bomb became
6.4 GB) and allocate whatever shape a member's header declares. Here the zip directory is read
first: each member must be a ``.npy`` whose header declares a 1-D float array of exactly the bytes
the member holds, and the declared sizes together may not exceed :data:`MAX_ESD_BYTES`. Members
are then inflated one at a time, never past their declared size, so memory stays bounded by the
limit whatever the file claims. No pickle is ever loaded.
"""

from __future__ import annotations

import dataclasses
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ._files import atomic_open, atomic_path
from ._version import __version__
from .errors import ConfigError, FormatError
from .records import (MAX_JSON_BYTES, NAN, Record, ResultFile, check_schema, checked, internal, jsonable, load,
                      read_json, write_json)

__all__ = ["LayerResult", "Analysis", "ANALYSIS_SCHEMA", "STATUSES", "WARNINGS", "iter_ok", "load_esd", "save_esd",
           "MAX_ESD_BYTES", "Record", "ResultFile", "checked", "internal", "load", "read_json", "write_json",
           "check_schema", "jsonable", "MAX_JSON_BYTES"]

ANALYSIS_SCHEMA = "spectra.analysis/1"

#: Status values a layer record can carry.
STATUSES = ("success", "failed", "skipped")
#: Warning labels (HT-SR): alpha < 2 over-trained, alpha > 6 under-trained.
WARNINGS = ("", "under-trained", "over-trained")
#: Largest total of uncompressed eigenvalue data read from one file (32 M float64 eigenvalues).
MAX_ESD_BYTES = 256 << 20


@dataclass(frozen=True)
class LayerResult(Record):
    """Spectral metrics of one weight matrix (see README "Analysis JSON" for every field).

    Eigenvalues are lambda = sigma^2 of the matrix as stored (no 1/N), so ``lambda_max`` equals the
    squared spectral norm and ``norm`` the squared Frobenius norm, as in WeightWatcher.
    """

    name: str
    param: str
    kind: str
    shape: tuple[int, ...] = checked(ge=0)
    depth: int = checked(ge=0)
    N: int | None = checked(None, ge=0)
    M: int | None = checked(None, ge=0)
    Q: float = checked(NAN, ge=0)
    num_evals: int = checked(0, ge=0)
    lambda_max: float = checked(NAN, ge=0)
    spectral_norm: float = checked(NAN, ge=0)
    norm: float = checked(NAN, ge=0)
    log_norm: float = NAN
    log_spectral_norm: float = NAN
    stable_rank: float = checked(NAN, ge=0)
    entropy: float = checked(NAN, ge=0)
    matrix_rank: int | None = checked(None, ge=0)
    alpha: float = checked(NAN, gt=0)
    alpha_weighted: float = NAN
    log_alpha_norm: float = NAN
    xmin: float = checked(NAN, ge=0)
    xmax: float = checked(NAN, ge=0)
    D: float = checked(NAN, ge=0, le=1)
    sigma: float = checked(NAN, ge=0)
    num_pl_spikes: int | None = checked(None, ge=0)
    status: str = checked("success", choices=STATUSES)
    reason: str = ""
    warning: str = checked("", choices=WARNINGS)
    fit: str = ""
    dtype: str = ""
    expert: int | None = checked(None, ge=0)
    attached: tuple[str, ...] = ()
    # optional groups: bootstrap, fingers, Marchenko-Pastur, randomization, distribution comparison
    alpha_ci: tuple[float, float] | None = checked(None, gt=0)
    alpha_ci_warning: str = ""
    num_fingers: int | None = checked(None, ge=0)
    raw_alpha: float = checked(NAN, gt=0)
    sigma_mp: float = checked(NAN, ge=0)
    num_spikes: int | None = checked(None, ge=0)
    mp_softrank: float = checked(NAN, ge=0)
    bulk_min: float = checked(NAN, ge=0)
    bulk_max: float = checked(NAN, ge=0)
    rand_lambda_max: float = checked(NAN, ge=0)
    num_traps: int | None = checked(None, ge=0)
    rand_distance: float = checked(NAN, ge=0)
    compare: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"


@dataclass(frozen=True)
class Analysis(ResultFile):
    """The result of :func:`spectra.analyze`: per-layer records, a summary and the run's settings.

    ``evals`` maps layer name to its sorted eigenvalues (float64 numpy). It is kept in memory for
    plotting and written separately with :meth:`save_esd`; the JSON file does not carry it.
    An analysis stopped by Ctrl-C has ``summary["partial"] = True`` (see :attr:`partial`).
    """

    schema = ANALYSIS_SCHEMA
    json_order = ("checkpoint", "created", "config", "summary", "attached", "layers")

    layers: tuple[LayerResult, ...]
    summary: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    checkpoint: str = ""
    created: str = ""
    spectra_version: str = __version__
    attached: Mapping[str, str | None] = field(default_factory=dict)
    evals: Mapping[str, np.ndarray] = internal()

    # ----------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    def layer(self, name: str) -> LayerResult:
        for rec in self.layers:
            if rec.name == name:
                return rec
        raise KeyError(name)

    @property
    def successful(self) -> tuple[LayerResult, ...]:
        return tuple(rec for rec in self.layers if rec.ok)

    @property
    def partial(self) -> bool:
        """True when the run was interrupted: layers not reached are ``skipped`` with that reason."""
        return bool(self.summary.get("partial", False))

    # ------------------------------------------------------------ files
    @classmethod
    def _from_file(cls, data: Mapping[str, Any], path: Path) -> "Analysis":
        """The analysis, with eigenvalues from a sibling ``*.esd.npz`` if there is one."""
        analysis = cls.from_dict(data, origin=str(path))
        esd = path.with_suffix(".esd.npz")
        if esd.is_file():
            analysis = dataclasses.replace(analysis, evals=load_esd(esd))
        return analysis

    def to_records(self) -> list[dict[str, Any]]:
        return [rec.to_dict() for rec in self.layers]

    def to_frame(self):
        """The per-layer table as a pandas DataFrame (needs the ``report`` extra)."""
        from .errors import require

        pd = require("pandas", "report")
        rows = []
        for rec in self.layers:
            row = rec.to_dict()
            row["shape"] = "x".join(str(s) for s in rec.shape)
            row["attached"] = ",".join(rec.attached)
            ci = row.pop("alpha_ci")
            row["alpha_ci_low"], row["alpha_ci_high"] = (ci if ci else (None, None))
            compare = row.pop("compare")
            for dist, stats in (compare or {}).items():
                for stat, value in stats.items():
                    row[f"{dist}_{stat}"] = value
            rows.append(row)
        return pd.DataFrame(rows)

    def save(self, path: str | Path) -> Path:
        """Write by extension, atomically: ``.json`` (the schema), ``.csv`` or ``.parquet`` (the table)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            self.to_json(path)
        elif suffix == ".csv":
            frame = self.to_frame()
            with atomic_path(path) as tmp:
                frame.to_csv(tmp, index=False)
        elif suffix == ".parquet":
            frame = self.to_frame()
            try:
                with atomic_path(path) as tmp:
                    frame.to_parquet(tmp, index=False)
            except ImportError as exc:
                raise ConfigError(f"cannot write parquet ({exc}): pip install 'spectra-hts[parquet]', "
                                  "or use .json or .csv") from None
        else:
            raise ConfigError(f"unknown output extension {suffix!r}: use .json, .csv or .parquet")
        return path

    def save_esd(self, path: str | Path) -> Path:
        """Write every layer's eigenvalues to a compressed ``.npz`` keyed by layer name (atomically)."""
        return save_esd(self.evals, path)


def iter_ok(layers: Iterable[LayerResult]) -> Iterable[LayerResult]:
    return (rec for rec in layers if rec.ok)


# ----------------------------------------------------------------------------- eigenvalue files




def save_esd(evals: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Write ``{layer name: eigenvalues}`` to a compressed ``.npz``, atomically."""
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **{name: np.asarray(ev) for name, ev in evals.items()})
    return path


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    from numpy.lib import format as npy

    where = f"{path}: member {info.filename!r}"
    with zf.open(info) as fh:
        try:
            version = npy.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(fh)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, EOFError) as exc:
            raise FormatError(f"{where} is not a .npy array ({exc})") from None
        if dtype.hasobject or dtype.kind != "f":
            raise FormatError(f"{where} holds {dtype} values; eigenvalues are floating-point numbers")
        if len(shape) != 1:
            raise FormatError(f"{where} has shape {shape}; eigenvalues are a 1-D array")
        expected = shape[0] * dtype.itemsize
        if fh.tell() + expected != info.file_size:
            raise FormatError(f"{where} declares {shape[0]:,} values but holds {info.file_size - fh.tell():,} bytes")
        data = fh.read(expected)
    if len(data) != expected:
        raise FormatError(f"{where} is truncated")
    return np.frombuffer(data, dtype=dtype).astype(np.float64)


def load_esd(path: str | Path) -> dict[str, np.ndarray]:
    """Read eigenvalues written by :func:`save_esd` (float64 arrays keyed by layer name)."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            if len(set(names)) != len(names):
                raise FormatError(f"{path}: the archive names a member twice")
            bad = [n for n in names if not n.endswith(".npy")]
            if bad:
                raise FormatError(f"{path}: member {bad[0]!r} is not a .npy array; not a spectra eigenvalue file")
            total = sum(i.file_size for i in infos)
            if total > MAX_ESD_BYTES:
                raise FormatError(f"{path}: members would inflate to {total:,} bytes, more than the "
                                  f"{MAX_ESD_BYTES >> 20} MiB an eigenvalue file may hold")
            return {i.filename[:-4]: _read_member(zf, i, path) for i in infos}
    except (OSError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError) as exc:
        raise FormatError(f"{path}: not a spectra eigenvalue file ({exc})") from None
