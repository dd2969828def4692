"""Frozen result records and the versioned ``spectra.analysis/1`` file format.

A :class:`LayerResult` is one analysed matrix (a Linear, an Embedding, a pooled convolution, one
expert of a mixture-of-experts stack) or one tensor that was looked at and skipped. Missing numbers
are ``NaN`` in Python and ``null`` in JSON, never ``-1``. Column names follow WeightWatcher where the
meaning is the same, so a user can switch tools without relearning the table.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from ._version import __version__
from .errors import FormatError

__all__ = ["LayerResult", "Analysis", "ANALYSIS_SCHEMA", "jsonable", "read_json", "write_json", "record_dict",
           "record_kwargs"]

ANALYSIS_SCHEMA = "spectra.analysis/1"
NAN = float("nan")

#: Status values a layer record can carry.
STATUSES = ("success", "failed", "skipped")
#: Warning labels (HT-SR): alpha < 2 over-trained, alpha > 6 under-trained.
WARNINGS = ("", "under-trained", "over-trained")


def record_dict(record: Any) -> dict[str, Any]:
    """A frozen per-layer record as a JSON-ready dict (NaN and inf become null)."""
    return {f.name: jsonable(getattr(record, f.name)) for f in dataclasses.fields(record)}


def record_kwargs(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor arguments of the record ``cls`` from a JSON dict: fields it does not know are
    ignored (files from a newer minor version still load) and a null float field becomes NaN."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    return {key: NAN if value is None and known[key].type == "float" else value
            for key, value in data.items() if key in known}


@dataclass(frozen=True)
class LayerResult:
    """Spectral metrics of one weight matrix (see README "Analysis JSON" for every field).

    Eigenvalues are lambda = sigma^2 of the matrix as stored (no 1/N), so ``lambda_max`` equals the
    squared spectral norm and ``norm`` the squared Frobenius norm, as in WeightWatcher.
    """

    name: str
    param: str
    kind: str
    shape: tuple[int, ...]
    depth: int
    N: int | None = None
    M: int | None = None
    Q: float = NAN
    num_evals: int = 0
    lambda_max: float = NAN
    spectral_norm: float = NAN
    norm: float = NAN
    log_norm: float = NAN
    log_spectral_norm: float = NAN
    stable_rank: float = NAN
    entropy: float = NAN
    matrix_rank: int | None = None
    alpha: float = NAN
    alpha_weighted: float = NAN
    log_alpha_norm: float = NAN
    xmin: float = NAN
    xmax: float = NAN
    D: float = NAN
    sigma: float = NAN
    num_pl_spikes: int | None = None
    status: str = "success"
    reason: str = ""
    warning: str = ""
    fit: str = ""
    dtype: str = ""
    expert: int | None = None
    attached: tuple[str, ...] = ()
    # optional groups: bootstrap, fingers, Marchenko-Pastur, randomization, distribution comparison
    alpha_ci: tuple[float, float] | None = None
    alpha_ci_warning: str = ""
    num_fingers: int | None = None
    raw_alpha: float = NAN
    sigma_mp: float = NAN
    num_spikes: int | None = None
    mp_softrank: float = NAN
    bulk_min: float = NAN
    bulk_max: float = NAN
    rand_lambda_max: float = NAN
    num_traps: int | None = None
    rand_distance: float = NAN
    compare: Mapping[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def to_dict(self) -> dict[str, Any]:
        return record_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LayerResult":
        kwargs = record_kwargs(cls, data)
        for key in ("shape", "attached"):
            if key in kwargs and kwargs[key] is not None:
                kwargs[key] = tuple(kwargs[key])
        if kwargs.get("alpha_ci") is not None:
            try:
                kwargs["alpha_ci"] = tuple(float(v) if v is not None else NAN for v in kwargs["alpha_ci"])
            except (TypeError, ValueError):
                raise FormatError(f"layer {data.get('name')!r}: alpha_ci must be two numbers") from None
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise FormatError(f"layer record is missing a required field: {exc}") from None


@dataclass(frozen=True)
class Analysis:
    """The result of :func:`spectra.analyze`: per-layer records, a summary and the run's settings.

    ``evals`` maps layer name to its sorted eigenvalues (float64 numpy). It is kept in memory for
    plotting and written separately with :meth:`save_esd`; the JSON file does not carry it.
    """

    layers: tuple[LayerResult, ...]
    summary: Mapping[str, Any]
    config: Mapping[str, Any]
    checkpoint: str
    created: str
    spectra_version: str = __version__
    attached: Mapping[str, str | None] = field(default_factory=dict)
    evals: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

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

    # ------------------------------------------------------------ serialise
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": ANALYSIS_SCHEMA,
            "spectra_version": self.spectra_version,
            "checkpoint": self.checkpoint,
            "created": self.created,
            "config": jsonable(dict(self.config)),
            "summary": jsonable(dict(self.summary)),
            "attached": dict(self.attached),
            "layers": [rec.to_dict() for rec in self.layers],
        }

    def to_json(self, path: str | Path | None = None, *, indent: int | None = 1) -> str:
        """Serialise to ``spectra.analysis/1`` JSON; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "analysis") -> "Analysis":
        check_schema(data, ANALYSIS_SCHEMA, origin)
        try:
            layers = tuple(LayerResult.from_dict(rec) for rec in data["layers"])
            return cls(
                layers=layers,
                summary=dict(data.get("summary") or {}),
                config=dict(data.get("config") or {}),
                checkpoint=str(data.get("checkpoint", "")),
                created=str(data.get("created", "")),
                spectra_version=str(data.get("spectra_version", "")),
                attached=dict(data.get("attached") or {}),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise FormatError(f"{origin}: not a valid {ANALYSIS_SCHEMA} file ({exc})") from None

    @classmethod
    def from_json(cls, path: str | Path) -> "Analysis":
        """Read an analysis JSON file (and its eigenvalues from a sibling ``*.esd.npz`` if present)."""
        data = read_json(path)
        analysis = cls.from_dict(data, origin=str(path))
        esd = Path(path).with_suffix(".esd.npz")
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
        """Write by extension: ``.json`` (the schema), ``.csv`` or ``.parquet`` (the table)."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".json":
            self.to_json(path)
        elif suffix == ".csv":
            self.to_frame().to_csv(path, index=False)
        elif suffix == ".parquet":
            try:
                self.to_frame().to_parquet(path, index=False)
            except ImportError as exc:
                from .errors import ConfigError

                raise ConfigError(f"cannot write parquet ({exc}): pip install 'spectra-hts[parquet]', "
                                  "or use .json or .csv") from None
        else:
            from .errors import ConfigError

            raise ConfigError(f"unknown output extension {suffix!r}: use .json, .csv or .parquet")
        return path

    def save_esd(self, path: str | Path) -> Path:
        """Write every layer's eigenvalues to a compressed ``.npz`` keyed by layer name."""
        path = Path(path)
        np.savez_compressed(path, **{name: np.asarray(ev) for name, ev in self.evals.items()})
        return path


def load_esd(path: str | Path) -> dict[str, np.ndarray]:
    """Read eigenvalues written by :meth:`Analysis.save_esd` (no pickle is ever loaded)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a spectra eigenvalue file ({exc})") from None


# ------------------------------------------------------------------ helpers


def jsonable(value: Any) -> Any:
    """Convert numpy scalars, tuples and NaN/inf to JSON-safe Python values (NaN -> None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, Path):
        return str(value)
    return str(value)


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, turning every failure into a one-line :class:`FormatError`."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if path.is_dir():
        raise FormatError(f"{path}: is a directory, expected a JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise FormatError(f"{path}: not a text file") from None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg})") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object at the top level")
    return data


def write_json(data: Mapping[str, Any], path: str | Path, *, indent: int | None = 1) -> Path:
    """Write a JSON-safe version of ``data`` (NaN becomes null)."""
    path = Path(path)
    path.write_text(json.dumps(jsonable(data), indent=indent, allow_nan=False) + "\n", encoding="utf-8")
    return path


def check_schema(data: Mapping[str, Any], expected: str, origin: str) -> None:
    """Raise :class:`FormatError` unless ``data['schema']`` is ``expected`` (same major version)."""
    schema = data.get("schema")
    if schema is None:
        raise FormatError(f"{origin}: no 'schema' field; expected a {expected} file")
    family, _, major = str(schema).partition("/")
    exp_family, _, exp_major = expected.partition("/")
    if family != exp_family:
        raise FormatError(f"{origin}: is a {schema} file, expected {expected}")
    if major != exp_major:
        raise FormatError(f"{origin}: schema {schema} is not supported (this spectra reads {expected})")


def iter_ok(layers: Iterable[LayerResult]) -> Iterable[LayerResult]:
    return (rec for rec in layers if rec.ok)
