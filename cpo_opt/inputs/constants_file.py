"""Constants files (``--constants FILE``, written by ``cpo-opt calibrate --out``).

A constants file replaces some of the model's efficiency constants
(:data:`cpo_opt.model.constants.INFO`). Its top-level tables are *levels*: ``"*"`` (every GPU),
a GPU generation (``ampere``, ``hopper``, ``blackwell``, ``rubin``) or a GPU preset name
(``H100-SXM``); a GPU takes the most specific value (GPU name over generation over ``"*"``
over the shipped value, :func:`cpo_opt.model.constants.constants_for`). Each constant is a
number in SI units, or a table with its interval::

    ["*"]
    kernel_overhead_s = 4e-6

    [ampere]
    gemm_eff_bf16 = { value = 0.79, low = 0.76, high = 0.82, unit = "fraction" }

    ["H100-SXM"]
    link_eff_scale_up = 0.78

``low``/``high`` (both or neither) bound the constant (``calibrate`` writes 90% intervals);
when present, ``evaluate``/``optimize`` report a step-time interval. An optional ``[about]``
table is free text (``calibrate`` records its cases and errors there).

Rules (each broken one is an :class:`~cpo_opt.inputs.InputError` naming the file, the key and
the rule): a constant must be one :data:`INFO` lists; values are finite numbers; a
``"fraction"`` lies in (0, 1]; any other constant (a time, a byte count) is > 0;
``low <= value <= high``; a ``unit``, when given, is the constant's unit.
"""

from __future__ import annotations

import math
import numbers
import os
import pathlib
from typing import Any, Mapping

from cpo_opt.inputs.sources import InputError, read_document
from cpo_opt.inputs.tables import error
from cpo_opt.model.constants import GENERATIONS, INFO

ABOUT = "about"
"""The free-text table of a constants file (not a level)."""

_ENTRY_KEYS = ("value", "low", "high", "unit")


class ConstantsTable(dict):
    """A checked constants table: ``{level: {name: value}}`` (what
    :func:`~cpo_opt.model.constants.constants_for` and ``load_system(constants=...)`` take),
    with the intervals of the constants that carry one and where it came from.

    Attributes:
      intervals: ``{level: {name: (low, high)}}``, SI units.
      origin: the file name (or ``"<table>"``) used in messages.
      about: the file's ``[about]`` table.
    """

    def __init__(self, values: Mapping[str, Mapping[str, float]] | None = None,
                 intervals: Mapping[str, Mapping[str, tuple[float, float]]] | None = None,
                 origin: str = "<table>", about: Mapping[str, Any] | None = None):
        super().__init__({lvl: dict(v) for lvl, v in (values or {}).items()})
        self.intervals = {lvl: {n: (float(a), float(b)) for n, (a, b) in v.items()}
                          for lvl, v in (intervals or {}).items() if v}
        self.origin = origin
        self.about = dict(about or {})

    def has_intervals(self) -> bool:
        return any(self.intervals.values())

    def entries(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{level: {name: {"value", "low", "high", "unit"}}}`` (low/high None without one)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for level, values in self.items():
            for name, value in values.items():
                low, high = self.intervals.get(level, {}).get(name, (None, None))
                out.setdefault(level, {})[name] = {"value": float(value), "low": low,
                                                   "high": high, "unit": INFO[name].unit}
        return out

    def __reduce__(self):  # keep the attributes through copy/deepcopy/pickle
        return (ConstantsTable, (dict(self), self.intervals, self.origin, self.about))


def _number(x: Any, where: str, key: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise error(where, key, "must be a number", x)
    v = float(x)
    if not math.isfinite(v):
        raise error(where, key, "must be a finite number", x)
    return v


def _check_range(name: str, v: float, where: str, key: str, x: Any) -> None:
    if INFO[name].unit == "fraction":
        if not 0.0 < v <= 1.0:
            raise error(where, key, "a fraction of peak must lie in (0, 1]", x)
    elif not v > 0.0:
        raise error(where, key, f"must be > 0 ({INFO[name].unit})", x)


def _entry(name: str, raw: Any, where: str, key: str) -> tuple[float, tuple | None]:
    """(value, (low, high) or None) of one constant, checked."""
    if isinstance(raw, Mapping):
        for k in raw:
            if k not in _ENTRY_KEYS:
                raise error(where, f"{key}.{k}", "unknown key; known keys: " +
                            ", ".join(_ENTRY_KEYS))
        if "value" not in raw:
            raise error(where, f"{key}.value", "missing required key")
        if "unit" in raw and raw["unit"] != INFO[name].unit:
            raise error(where, f"{key}.unit", f"the unit of {name} is {INFO[name].unit!r}",
                        raw["unit"])
        if ("low" in raw) != ("high" in raw):
            raise error(where, f"{key}.{'high' if 'low' in raw else 'low'}",
                        "missing: give both low and high, or neither")
        value = _number(raw["value"], where, f"{key}.value")
        _check_range(name, value, where, f"{key}.value", raw["value"])
        if "low" not in raw:
            return value, None
        low = _number(raw["low"], where, f"{key}.low")
        high = _number(raw["high"], where, f"{key}.high")
        _check_range(name, low, where, f"{key}.low", raw["low"])
        _check_range(name, high, where, f"{key}.high", raw["high"])
        if not low <= value <= high:
            raise error(where, key, "must satisfy low <= value <= high",
                        f"low={low:g}, value={value:g}, high={high:g}")
        return value, (low, high)
    value = _number(raw, where, key)
    _check_range(name, value, where, key, raw)
    return value, None


def table_from_document(doc: Any, where: str) -> ConstantsTable:
    """A checked :class:`ConstantsTable` from a parsed document (see the module docstring)."""
    if not isinstance(doc, Mapping):
        raise error(where, "constants", "must be a table of levels ('*', a GPU generation or a "
                    "GPU name)", doc)
    values: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, tuple[float, float]]] = {}
    about: dict = {}
    for level, section in doc.items():
        if level == ABOUT:
            if not isinstance(section, Mapping):
                raise error(where, ABOUT, "must be a table", section)
            about = dict(section)
            continue
        if not isinstance(level, str) or not level.strip():
            raise error(where, repr(level), "a level must be '*', a GPU generation ("
                        + ", ".join(GENERATIONS) + ") or a GPU name")
        if not isinstance(section, Mapping):
            raise error(where, level, "must be a table of constants (a level: '*', a GPU "
                        "generation or a GPU name)", section)
        for name, raw in section.items():
            key = f"{level}.{name}"
            if name not in INFO:
                raise error(where, key, "unknown constant; known constants: " +
                            ", ".join(INFO))
            value, interval = _entry(name, raw, where, key)
            values.setdefault(level, {})[name] = value
            if interval is not None:
                intervals.setdefault(level, {})[name] = interval
    return ConstantsTable(values, intervals, where, about)


def read_constants(path: str | os.PathLike) -> ConstantsTable:
    """Read and check a constants file (``.toml`` or ``.json``)."""
    p = pathlib.Path(path)
    where = str(path)
    if not p.is_file():
        raise InputError(f"{where}: no such constants file")
    return table_from_document(read_document(p, where), where)


def as_table(ref: Any) -> ConstantsTable | None:
    """A :class:`ConstantsTable` from a path, a dict (a document of the file's structure) or a
    table; None stays None (the shipped constants)."""
    if ref is None or isinstance(ref, ConstantsTable):
        return ref
    if isinstance(ref, Mapping):
        return table_from_document(ref, "<constants table>")
    if isinstance(ref, (str, os.PathLike)):
        return read_constants(ref)
    raise InputError(f"constants: expected a file path or a table (got {type(ref).__name__})")


# --------------------------------------------------------------------------- writing
def _key(text: str) -> str:
    """A TOML key: bare when it can be, else a quoted string."""
    if text and all(c.isalnum() or c in "_-" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scalar(x: Any) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, numbers.Integral):
        return str(int(x))
    if isinstance(x, numbers.Real):
        return repr(float(x))
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_scalar(v) for v in x) + "]"
    if isinstance(x, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {_scalar(v)}" for k, v in x.items()) + " }"
    s = str(x).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    return f'"{s}"'


def dumps(table: ConstantsTable, header: str = "",
          comments: Mapping[str, list[str]] | None = None) -> str:
    """The TOML text of a constants table (every value with its interval and unit).

    ``comments`` maps a level to comment lines written at the end of its section.
    """
    lines = [f"# {ln}" if ln else "#" for ln in header.splitlines()]
    if lines:
        lines.append("")
    if table.about:
        lines.append(f"[{ABOUT}]")
        lines += [f"{_key(str(k))} = {_scalar(v)}" for k, v in table.about.items()]
        lines.append("")
    levels = list(table) + [lvl for lvl in (comments or {}) if lvl not in table]
    for level in levels:
        lines.append(f"[{_key(level)}]")
        for name, value in table.get(level, {}).items():
            entry = {"value": float(value)}
            if name in table.intervals.get(level, {}):
                entry["low"], entry["high"] = table.intervals[level][name]
            entry["unit"] = INFO[name].unit
            lines.append(f"{name} = {_scalar(entry)}")
        lines += [f"# {c}" for c in (comments or {}).get(level, [])]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_constants(path: str | os.PathLike, table: ConstantsTable, header: str = "",
                    comments: Mapping[str, list[str]] | None = None) -> None:
    """Write ``table`` as a TOML constants file that :func:`read_constants` reads back."""
    p = pathlib.Path(path)
    if p.parent and not p.parent.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(dumps(table, header, comments), encoding="utf-8")
