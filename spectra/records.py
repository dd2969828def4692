"""One base for every versioned spectra file, and the typed reader every file gets from it.

``spectra.results`` re-exports these names next to the analysis types.

A file type is a frozen dataclass that subclasses :class:`ResultFile` and names its schema::

    @dataclass(frozen=True)
    class Trajectory(ResultFile):
        schema = "spectra.trajectory/1"
        steps: tuple[StepRecord, ...]          # StepRecord is a Record dataclass
        config: Mapping[str, Any] = field(default_factory=dict)
        spectra_version: str = __version__

and it has ``to_dict``/``to_json``/``save`` (atomic) and ``from_dict``/``from_json``/``load``;
:func:`load` finds it by the ``schema`` of a file once its module is listed in :data:`MODULES`.

Reading is driven by the dataclass fields and their types, so every reader checks the same way:
``float`` takes a number or ``null`` (NaN), ``int`` an integer, ``str`` a string, ``bool`` a
boolean, ``X | None`` also ``null``, ``tuple[T, ...]`` a list, ``tuple[T, U]`` a list of exactly
two, ``Mapping[str, T]`` an object, a :class:`Record` type an object read field by field. A field
without a default must be present; unknown fields are ignored (files from a newer minor version
load). :func:`checked` adds value rules (``alpha: float = checked(NAN, gt=0)``). Every problem is
a :class:`~spectra.errors.FormatError` that names the file, the record and the field::

    analysis.json: layers[3] ('encoder.layer.0.attention.self.query').alpha must be > 0, got -1.0

The JSON itself is parsed strictly (:mod:`spectra._json`): no NaN/Infinity, no out-of-range
numbers, no duplicate keys, bounded nesting, at most :data:`MAX_JSON_BYTES` bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import types
import typing
from collections.abc import Mapping as AbcMapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import numpy as np

from ._files import atomic_write
from ._json import JSONError, loads
from .errors import FormatError

__all__ = ["Record", "ResultFile", "checked", "internal", "load", "read_json", "write_json", "check_schema",
           "jsonable", "MODULES", "MAX_JSON_BYTES"]

#: The one NaN object records use for "missing", so a record read back compares equal to the original.
NAN = float("nan")
#: Largest spectra JSON file read (an analysis of ~100,000 layer records).
MAX_JSON_BYTES = 256 << 20
#: Schema family -> module defining its class, imported on demand by :func:`load`.
MODULES = {
    "spectra.analysis": "spectra.results",
    "spectra.lrmap": "spectra.prescribe.lrmap",
    "spectra.noise": "spectra.noise.result",
    "spectra.diff": "spectra.diff",
    "spectra.run": "spectra.train.runfiles",
}
_REGISTRY: dict[str, type["ResultFile"]] = {}
R = TypeVar("R", bound="Record")


# ----------------------------------------------------------------------------- field rules


@dataclass(frozen=True)
class Check:
    """Value rules of one field (applied to each item of a tuple field); NaN/None pass unless ``finite``."""

    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None
    finite: bool = False

    def __call__(self, value: Any) -> None:
        if isinstance(value, (tuple, AbcMapping)):
            items = value.items() if isinstance(value, AbcMapping) else enumerate(value)
            for key, item in items:
                try:
                    self(item)
                except _Bad as exc:
                    exc.path.insert(0, f"[{key!r}]" if isinstance(value, AbcMapping) else f"[{key}]")
                    raise
            return
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        if missing:
            if self.finite:
                raise _Bad(f"must be a number, got {'null' if value is None else value}")
            return
        if self.choices is not None and value not in self.choices:
            raise _Bad(f"must be one of {', '.join(map(repr, self.choices))}, got {_show(value)}")
        if self.gt is not None and not value > self.gt:
            raise _Bad(f"must be > {self.gt:g}, got {_show(value)}")
        if self.ge is not None and not value >= self.ge:
            raise _Bad(f"must be >= {self.ge:g}, got {_show(value)}")
        if self.le is not None and not value <= self.le:
            raise _Bad(f"must be <= {self.le:g}, got {_show(value)}")


def checked(default: Any = MISSING, *, default_factory: Any = MISSING, omit_none: bool = False, **rules: Any) -> Any:
    """A dataclass field whose value the reader checks: ``alpha: float = checked(NAN, gt=0)``.

    Rules: ``gt``, ``ge``, ``le`` (bounds), ``choices`` (allowed values), ``finite`` (``null`` and
    NaN refused); they apply to each item of a tuple and each value of a mapping. Objects built in
    Python are not checked; files read with ``from_dict`` are. ``omit_none``: ``to_dict`` leaves
    the field out while it is None (an optional section of a file).
    """
    if "choices" in rules:
        rules["choices"] = tuple(rules["choices"])
    return field(default=default, default_factory=default_factory,
                 metadata={"check": Check(**rules), "omit_none": omit_none})


def internal(*, default_factory: Any = dict, **kwargs: Any) -> Any:
    """A field kept in memory only: not written by ``to_dict``, not read by ``from_dict``."""
    return field(default_factory=default_factory, repr=False, compare=False, metadata={"json": False}, **kwargs)


# ----------------------------------------------------------------------------- decoding


class _Bad(Exception):
    """A value that does not fit its field; ``path`` grows as the error leaves nested records."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []

    def message(self) -> str:
        where = ""
        for seg in self.path:
            where += seg if seg.startswith("[") else (f".{seg}" if where else seg)
        return f"{where} {self.problem}" if where else self.problem


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list, str)):
        return names[type(value)] if type(value) in names else type(value).__name__
    if isinstance(value, (int, float)):
        return f"the number {_show(value)}"
    return type(value).__name__


def _expected(what: str, value: Any) -> _Bad:
    shown = f"{_kind(value)} {_show(value)}" if isinstance(value, str) else _kind(value)
    return _Bad(f"must be {what}, got {shown}")


def _float(value: Any) -> float:
    if value is None:
        return NAN
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise _expected("a number or null", value)
    out = float(value)
    if math.isinf(out):
        raise _Bad(f"must be a finite number or null, got {out}")
    return out


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise _expected("an integer", value)
    return int(value)


def _exact(kind: type, what: str) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise _expected(what, value)
        return value
    return decode


def _item_label(index: int, item: Any) -> str:
    name = item.get("name") if isinstance(item, AbcMapping) else None
    return f"[{index}] ({name!r})" if isinstance(name, str) else f"[{index}]"


@functools.lru_cache(maxsize=None)
def _decoder(hint: Any) -> Callable[[Any], Any]:
    """A function that turns a JSON value into ``hint``'s Python value or raises :class:`_Bad`."""
    if hint is Any or hint is object:
        return lambda value: value
    if hint is float:
        return _float
    if hint is int:
        return _int
    if hint is str:
        return _exact(str, "a string")
    if hint is bool:
        return _exact(bool, "true or false")
    if hint is Path:
        text = _exact(str, "a path string")
        return lambda value: Path(text(value))
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        optional = len(arms) < len(args)
        decoders = [_decoder(a) for a in arms]

        def union(value: Any) -> Any:
            if value is None and optional:
                return None
            error = None
            for decode in decoders:
                try:
                    return decode(value)
                except _Bad as exc:
                    error = error or exc
            raise error  # type: ignore[misc]
        return union
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])

            def many(value: Any) -> tuple:
                if not isinstance(value, (list, tuple)):
                    raise _expected("a list", value)
                out = []
                for i, v in enumerate(value):
                    try:
                        out.append(item(v))
                    except _Bad as exc:
                        exc.path.insert(0, _item_label(i, v))
                        raise
                return tuple(out)
            return many
        items = [_decoder(a) for a in args]

        def fixed(value: Any) -> tuple:
            if not isinstance(value, (list, tuple)) or len(value) != len(items):
                got = f"{len(value)} items" if isinstance(value, (list, tuple)) else _kind(value)
                raise _Bad(f"must be a list of {len(items)} items, got {got}")
            return tuple(decode(v) for decode, v in zip(items, value))
        return fixed
    if origin in (AbcMapping, dict, typing.Mapping):
        key_hint, value_hint = args if args else (str, Any)
        keys, values = _decoder(key_hint), _decoder(value_hint)

        def mapping(value: Any) -> dict:
            if not isinstance(value, AbcMapping):
                raise _expected("an object", value)
            out = {}
            for k, v in value.items():
                try:
                    out[keys(k)] = values(v)
                except _Bad as exc:
                    exc.path.insert(0, f"[{k!r}]")
                    raise
            return out
        return mapping
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint._build
    raise TypeError(f"spectra.results cannot read fields of type {hint!r}")  # a bug in a Record class


@dataclass(frozen=True)
class _Plan:
    name: str
    decode: Callable[[Any], Any]
    check: Check | None
    required: bool
    is_records: bool
    omit_none: bool


def _is_records(hint: Any) -> bool:
    args = typing.get_args(hint)
    return (typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis
            and isinstance(args[0], type) and issubclass(args[0], Record))


@functools.lru_cache(maxsize=None)
def _plan(cls: type) -> tuple[_Plan, ...]:
    hints = typing.get_type_hints(cls)
    plan = []
    for f in dataclasses.fields(cls):
        if not f.metadata.get("json", True):
            continue
        hint = hints[f.name]
        plan.append(_Plan(f.name, _decoder(hint), f.metadata.get("check"),
                          f.default is MISSING and f.default_factory is MISSING, _is_records(hint),
                          bool(f.metadata.get("omit_none"))))
    return tuple(plan)


# ----------------------------------------------------------------------------- records


class Record:
    """Base of frozen dataclasses that are written to and read from JSON (one layer's record, a file).

    ``to_dict`` writes every field (NaN and inf as ``null``, tuples as lists); ``from_dict`` reads
    them back with the checks described in the module docstring.
    """

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready Python values."""
        out: dict[str, Any] = {}
        for step in _plan(type(self)):
            value = getattr(self, step.name)
            if value is None and step.omit_none:
                continue
            out[step.name] = jsonable(value)
        return out

    @classmethod
    def _build(cls: type[R], data: Any) -> R:
        if not isinstance(data, AbcMapping):
            raise _expected("an object", data)
        kwargs: dict[str, Any] = {}
        for step in _plan(cls):
            if step.name not in data:
                if step.required:
                    raise _missing(step.name)
                continue
            try:
                value = step.decode(data[step.name])
                if step.check is not None:
                    step.check(value)
            except _Bad as exc:
                exc.path.insert(0, step.name)
                raise
            kwargs[step.name] = value
        try:
            return cls(**kwargs)
        except (FormatError, TypeError, ValueError) as exc:  # checks in __post_init__
            raise _Bad(f"is not valid: {exc}") from None

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any]) -> R:
        """Build from a JSON object; :class:`~spectra.errors.FormatError` names the bad field."""
        try:
            return cls._build(data)
        except _Bad as exc:
            raise FormatError(f"{cls.__name__} {exc.message()}") from None


def _missing(name: str) -> _Bad:
    bad = _Bad("is missing")
    bad.path.append(name)
    return bad


# ----------------------------------------------------------------------------- files


class ResultFile(Record):
    """A versioned file: ``schema`` (``family/major``) as a class attribute, plus a Record's fields.

    Subclasses register themselves by family, so :func:`load` can read any of them.
    """

    __slots__ = ()
    schema: ClassVar[str] = ""
    #: Field order in the file (fields not named follow in definition order); empty: record lists last.
    json_order: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "schema" in cls.__dict__ and cls.schema:
            _REGISTRY[cls.schema.partition("/")[0]] = cls

    def to_dict(self) -> dict[str, Any]:
        """``{"schema": ..., "spectra_version": ..., fields...}`` in :attr:`json_order`, else with the
        record lists (``layers``) last, for readability."""
        body = super().to_dict()
        out: dict[str, Any] = {"schema": self.schema}
        if "spectra_version" in body:
            out["spectra_version"] = body.pop("spectra_version")
        if self.json_order:
            out.update((k, body.pop(k)) for k in self.json_order if k in body)
            out.update(body)
            return out
        last = [s.name for s in _plan(type(self)) if s.is_records and s.name in body]
        out.update((k, v) for k, v in body.items() if k not in last)
        out.update((k, body[k]) for k in last)
        return out

    def to_json(self, path: str | Path | None = None, *, indent: int | None = 1) -> str:
        """The JSON text (serialised once); also written to ``path``, atomically, when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            atomic_write(path, text + "\n")
        return text

    def save(self, path: str | Path) -> Path:
        """Write the JSON file atomically (a temporary file, fsynced, renamed over ``path``)."""
        self.to_json(path)
        return Path(path)

    @classmethod
    def from_dict(cls: type[R], data: Mapping[str, Any], *, origin: str | None = None) -> R:  # type: ignore[override]
        """Read a parsed file; ``origin`` (the path) starts every error message."""
        origin = origin or cls.schema
        if not isinstance(data, AbcMapping):
            raise FormatError(f"{origin}: expected a JSON object, got {_kind(data)}")
        check_schema(data, cls.schema, origin)
        try:
            return cls._build(data)
        except _Bad as exc:
            raise FormatError(f"{origin}: {exc.message()}") from None

    @classmethod
    def _from_file(cls: type[R], data: Mapping[str, Any], path: Path) -> R:
        """Build from a file's parsed content (a hook: an analysis also reads its eigenvalue file)."""
        return cls.from_dict(data, origin=str(path))

    @classmethod
    def from_json(cls: type[R], path: str | Path) -> R:
        """Read a file of this type (another schema is a FormatError)."""
        return cls._from_file(read_json(path), Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "ResultFile":
        """``ResultFile.load(p)`` reads any spectra file (by its schema); ``LRMap.load(p)`` only maps."""
        if cls is ResultFile:
            return load(path)
        return cls.from_json(path)


def load(path: str | Path) -> ResultFile:
    """Read any spectra file, choosing its class by the ``schema`` field.

    >>> import tempfile, pathlib
    >>> from spectra.prescribe import LRMap
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
    >>> _ = LRMap(method="demo", params={"fc.weight": 2.0}).save(p)
    >>> type(load(p)).__name__
    'LRMap'
    """
    path = Path(path)
    data = read_json(path)
    schema = data.get("schema")
    if not isinstance(schema, str):
        raise FormatError(f"{path}: no 'schema' field; not a spectra file")
    family = schema.partition("/")[0]
    if family not in _REGISTRY and family in MODULES:
        importlib.import_module(MODULES[family])
    cls = _REGISTRY.get(family)
    if cls is None:
        known = ", ".join(sorted(f"{f}/…" for f in MODULES))
        raise FormatError(f"{path}: is a {schema!r} file, which spectra does not read (it reads {known})")
    return cls._from_file(data, path)


# ----------------------------------------------------------------------------- JSON helpers


def jsonable(value: Any) -> Any:
    """Convert records, numpy scalars, tuples and NaN/inf to JSON-safe Python values (NaN -> None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, AbcMapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, Path):
        return str(value)
    return str(value)


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object strictly, turning every failure into a one-line :class:`FormatError`."""
    path = Path(path)
    if not path.exists():
        raise FormatError(f"{path}: no such file")
    if path.is_dir():
        raise FormatError(f"{path}: is a directory, expected a JSON file")
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise FormatError(f"{path}: {size:,} bytes is larger than the {MAX_JSON_BYTES >> 20} MiB "
                              "a spectra JSON file may have")
        raw = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = loads(raw)
    except JSONError as exc:
        problem = "not a text file" if str(exc).startswith("not UTF-8") else str(exc)
        raise FormatError(f"{path}: {problem}") from None
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object at the top level, got {_kind(data)}")
    return data


def write_json(data: Mapping[str, Any], path: str | Path, *, indent: int | None = 1) -> Path:
    """Write a JSON-safe version of ``data`` (NaN becomes null) atomically."""
    return atomic_write(path, json.dumps(jsonable(data), indent=indent, allow_nan=False) + "\n")


def check_schema(data: Mapping[str, Any], expected: str, origin: str) -> None:
    """Raise :class:`FormatError` unless ``data['schema']`` is ``expected`` (same major version)."""
    schema = data.get("schema")
    if schema is None:
        raise FormatError(f"{origin}: no 'schema' field; expected a {expected} file")
    if not isinstance(schema, str):
        raise FormatError(f"{origin}: 'schema' must be a string such as {expected!r}, got {_kind(schema)}")
    family, _, major = schema.partition("/")
    exp_family, _, exp_major = expected.partition("/")
    if family != exp_family:
        raise FormatError(f"{origin}: is a {schema[:80]} file, expected {expected}")
    if major != exp_major:
        raise FormatError(f"{origin}: schema {schema[:80]} is not supported (this spectra reads {expected})")
