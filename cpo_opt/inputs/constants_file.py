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

A file says which GPU generations it covers with a top-level key, before any table::

    generations = ["ampere"]

``calibrate`` writes it from the generations of its cases. A GPU is covered when its
generation is listed or a level names the GPU itself; without the key, a file covers every
GPU when it has a ``"*"`` level (or no level at all), else the generations of its levels.
Used on a GPU it does not cover, the file is set aside: the shipped constants apply, with
the shipped intervals (:func:`for_gpu`), and the command's ``warnings`` say so.

Rules (each broken one is an :class:`~cpo_opt.inputs.InputError` naming the file, the key and
the rule), checked when the file is loaded, before anything is compiled: a constant must be
one :data:`INFO` lists (an unknown name gets a did-you-mean); values are finite numbers inside
the constant's physical range (:data:`RANGES`: a fraction of peak in [0.01, 1], a time, a
size or a rate positive and bounded; integers are compared exactly, never converted to a
float that could overflow); ``low <= value <= high``, both inside the range too; a ``unit``,
when given, is the constant's unit; a level is ``"*"``, a generation or a GPU name (a near
miss of a generation such as ``hoper`` is refused with a did-you-mean); every level lies
inside ``generations`` when the file gives it.
"""

from __future__ import annotations

import math
import numbers
import os
import pathlib
from typing import Any, Mapping, Sequence

from cpo_opt.inputs.sources import ArgumentError, InputError, did_you_mean, read_document
from cpo_opt.inputs.tables import error, number, show
from cpo_opt.model.constants import GENERATIONS, INFO, generation_of

ABOUT = "about"
"""The free-text table of a constants file (not a level)."""

COVERS = "generations"
"""The top-level key listing the GPU generations a file covers."""

_ENTRY_KEYS = ("value", "low", "high", "unit")

FRACTION_FLOOR = 0.01
"""Lowest accepted fraction of a peak (GEMM, attention, HBM, link efficiency). Measured
kernels reach 30-90% of their peaks (the sources of :mod:`cpo_opt.model.constants`); 1% is
30-90x below anything published and still leaves every step time finite. Below it a value
is a typo (``1e-300`` made every step take 1e300 s)."""

RANGES: dict[str, tuple[float, float]] = {
    # fractions of a datasheet peak: (0, 1], floored (FRACTION_FLOOR)
    "gemm_eff_bf16": (FRACTION_FLOOR, 1.0),
    "gemm_eff_fp8": (FRACTION_FLOOR, 1.0),
    "attn_eff_fwd": (FRACTION_FLOOR, 1.0),
    "attn_eff_bwd": (FRACTION_FLOOR, 1.0),
    "hbm_eff": (FRACTION_FLOOR, 1.0),
    "link_eff_scale_up": (FRACTION_FLOOR, 1.0),
    "link_eff_scale_out": (FRACTION_FLOOR, 1.0),
    # host issue time left under CUDA graphs: one launch per 1000 kernels .. no saving
    "graph_launch_fraction": (1e-3, 1.0),
    # SMs the all-to-all kernels hold: the overlapped compute runs on 1 - f of them, slowed
    # by f / (1 - f), so f = 1 is infinite; 0.9 (a 9x stretch) is far beyond any dispatcher
    # (DeepEP 20 of 132, HybridEP 16 of 148)
    "comm_sm_fraction": (1e-3, 0.9),
    # sustained over datasheet tensor clock: 10% .. 2x (boost clocks run ~1.1-1.3x the base)
    "clock_fraction": (0.1, 2.0),
    # fixed costs per kernel / per MoE layer: 1 ps (a what-if "none": the sync-free file of
    # docs/ sets 1e-12) .. 10 ms per kernel (launches cost ~2-20 us) and .. 1 s per MoE
    # layer's host sync (1.7 ms shipped)
    "kernel_overhead_s": (1e-12, 1e-2),
    "host_launch_s": (1e-12, 1e-2),
    "host_sync_s": (1e-12, 1.0),
    # GEMM tiling (:mod:`cpo_opt.model.compute`): 1 .. 10,000 SMs (a GPU has 108-160);
    # a fixed 1 ps .. 1 ms per 128 x 128 output tile (1.23 us shipped)
    "sm_count": (1.0, 1e4),
    "gemm_tile_overhead_s": (1e-12, 1e-3),
    # per remote peer of an all-to-all and per small kernel: 1 ps .. 10 ms (microseconds
    # measured, :mod:`cpo_opt.model.constants`)
    "a2a_peer_s": (1e-12, 1e-2),
    "small_kernel_s": (1e-12, 1e-2),
    # HBM held back from the model: 1 KB .. 1 PB (the largest HBM the system schema takes)
    "reserved_bytes": (1e3, 1e15),
    # GPU-host link: 1 KB/s .. 1 PB/s, the range of a fabric link in the system schema
    "host_link_bw": (1e3, 1e15),
}
"""Physical range of every constant, SI units, inclusive: what a constants file (and
``calibrate``'s output) may hold. Like the system schema's ``schema.RANGES`` the ranges are
10-1000x beyond any measured value, so they never bind a real fit, and inside them every
output stays finite (``tests/test_constants_schema.py`` evaluates and differentiates the model
at both ends of every range)."""

assert set(RANGES) == set(INFO), "every constant needs a physical range"


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
                 origin: str = "<table>", about: Mapping[str, Any] | None = None,
                 generations: Sequence[str] | None = None, note: str | None = None):
        super().__init__({lvl: dict(v) for lvl, v in (values or {}).items()})
        self.intervals = {lvl: {n: (float(a), float(b)) for n, (a, b) in v.items()}
                          for lvl, v in (intervals or {}).items() if v}
        self.origin = origin
        self.about = dict(about or {})
        self.generations = None if generations is None else tuple(generations)
        self.note = note

    def has_intervals(self) -> bool:
        return any(self.intervals.values())

    def covered(self) -> tuple[str, ...] | None:
        """The generations the table covers: its ``generations`` key, else (None: every GPU)
        for a table with a ``"*"`` level or no level, else the generations of its levels."""
        if self.generations is not None:
            return self.generations
        if "*" in self or not self:
            return None
        return tuple(sorted({g for g in (generation_of(lvl) if lvl not in GENERATIONS else lvl
                                         for lvl in self) if g}))

    def covers(self, gpu_name: str) -> bool:
        """Whether the table speaks for this GPU (its generation is covered, or a level
        names the GPU itself)."""
        covered = self.covered()
        return covered is None or generation_of(gpu_name) in covered or str(gpu_name) in self

    def intervals_for(self, gpu_name: str) -> dict[str, tuple[float, float]]:
        """``{name: (low, high)}`` of the intervals that apply to this GPU (its levels
        ``"*"``, generation, name; the most specific wins)."""
        out: dict[str, tuple[float, float]] = {}
        for level in ("*", generation_of(gpu_name) or "", str(gpu_name)):
            out.update(self.intervals.get(level, {}))
        return out

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
        return (ConstantsTable, (dict(self), self.intervals, self.origin, self.about,
                                 self.generations, self.note))


SHIPPED = "the shipped constants"
"""``origin`` of :func:`shipped_table`."""


def shipped_table(note: str | None = None) -> ConstantsTable:
    """The shipped constants as a table: the values :mod:`cpo_opt.model.fitted` sets and
    their 90% intervals (``constants_for`` of this table equals the shipped constants). It
    speaks for every GPU (:func:`for_gpu` never sets it aside)."""
    from cpo_opt.model import fitted
    return ConstantsTable(fitted.VALUES, fitted.INTERVALS, SHIPPED,
                          {"written_by": "cpo-opt (cpo_opt/model/fitted.py)"}, None, note)


def for_gpu(table: "ConstantsTable | None", gpu_name: str) -> "ConstantsTable | None":
    """``table`` when it covers ``gpu_name`` (or None); else the shipped table
    (:func:`shipped_table`) whose ``note`` is the sentence for the result's ``warnings``."""
    if table is None or table.origin == SHIPPED or table.covers(gpu_name):
        return table
    gen = generation_of(gpu_name)
    covered = table.covered() or ()
    return shipped_table(
        f"constants file {table.origin} covers {', '.join(covered) or 'no GPU generation'}"
        f", not {gpu_name} ({gen or 'unknown generation'}): the shipped constants and "
        "their intervals apply")


def _number(x: Any, where: str, key: str, name: str | None = None) -> float:
    """A finite float from a file value; an integer is compared with the range exactly
    first (``float(10**400)`` overflows)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise error(where, key, "must be a number" + (f" ({range_rule(name)})" if name else ""),
                    x)
    if isinstance(x, numbers.Integral) and name is not None:
        low, high = RANGES[name]
        if not low <= int(x) <= high:
            raise error(where, key, range_rule(name), x)
    try:
        v = float(x)
    except OverflowError:
        raise error(where, key, "must be a finite number", x) from None
    if not math.isfinite(v):
        raise error(where, key, "must be a finite number" + (f" ({range_rule(name)})"
                                                             if name else ""), x)
    return v


def range_rule(name: str) -> str:
    """The rule of a constant's range in words, e.g. ``must be between 0.01 and 1 (a
    fraction of peak, (0, 1]; physical range, constants_file.RANGES)``."""
    low, high = RANGES[name]
    unit = INFO[name].unit
    what = ("a fraction of peak, (0, 1]" if unit == "fraction" else
            "dimensionless" if unit == "ratio" else f"{unit}, > 0")
    return (f"must be between {number(low)} and {number(high)} ({what}; physical range, "
            "constants_file.RANGES)")


def _check_range(name: str, v: float, where: str, key: str, x: Any) -> None:
    low, high = RANGES[name]
    if not low <= v <= high:
        raise error(where, key, range_rule(name), x)


def _entry(name: str, raw: Any, where: str, key: str) -> tuple[float, tuple | None]:
    """(value, (low, high) or None) of one constant, checked."""
    if isinstance(raw, Mapping):
        for k in raw:
            if k not in _ENTRY_KEYS:
                raise error(where, f"{key}.{k}", "unknown key" + did_you_mean(str(k), list(
                    _ENTRY_KEYS)) + "; known keys: " + ", ".join(_ENTRY_KEYS))
        if "value" not in raw:
            raise error(where, f"{key}.value", "missing required key")
        if "unit" in raw and raw["unit"] != INFO[name].unit:
            raise error(where, f"{key}.unit", f"the unit of {name} is {INFO[name].unit!r}",
                        raw["unit"])
        if ("low" in raw) != ("high" in raw):
            raise error(where, f"{key}.{'high' if 'low' in raw else 'low'}",
                        "missing: give both low and high, or neither")
        value = _number(raw["value"], where, f"{key}.value", name)
        _check_range(name, value, where, f"{key}.value", raw["value"])
        if "low" not in raw:
            return value, None
        low = _number(raw["low"], where, f"{key}.low", name)
        high = _number(raw["high"], where, f"{key}.high", name)
        _check_range(name, low, where, f"{key}.low", raw["low"])
        _check_range(name, high, where, f"{key}.high", raw["high"])
        if not low <= value <= high:
            raise error(where, key, "must satisfy low <= value <= high",
                        f"low={low:g}, value={value:g}, high={high:g}")
        return value, (low, high)
    value = _number(raw, where, key, name)
    _check_range(name, value, where, key, raw)
    return value, None


def _level(level: Any, where: str) -> str:
    """A level: ``"*"``, a generation, or a GPU name; a near miss of a generation or of
    ``"*"`` (``hoper``, ``Hopper``) is refused with a did-you-mean."""
    if not isinstance(level, str) or not level.strip():
        raise error(where, repr(level), "a level must be '*', a GPU generation ("
                    + ", ".join(GENERATIONS) + ") or a GPU name")
    if level == "*" or level in GENERATIONS or generation_of(level):
        return level
    import difflib
    close = difflib.get_close_matches(level.lower(), list(GENERATIONS), n=1, cutoff=0.75)
    if close or level.strip() != level or level.lower() in GENERATIONS:
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise error(where, repr(level), f"unknown level; {hint}a level is '*', a GPU "
                    f"generation ({', '.join(GENERATIONS)}) or a GPU name")
    return level


def _generations(raw: Any, where: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(g, str) for g in raw):
        raise error(where, COVERS, "must be a list of GPU generations ("
                    + ", ".join(GENERATIONS) + ")", raw)
    for g in raw:
        if g not in GENERATIONS:
            raise error(where, COVERS, f"unknown GPU generation {show(g)}"
                        + did_you_mean(g, list(GENERATIONS)) + "; known: "
                        + ", ".join(GENERATIONS))
    return tuple(dict.fromkeys(raw))


def table_from_document(doc: Any, where: str) -> ConstantsTable:
    """A checked :class:`ConstantsTable` from a parsed document (see the module docstring)."""
    if not isinstance(doc, Mapping):
        raise error(where, "constants", "must be a table of levels ('*', a GPU generation or a "
                    "GPU name)", doc)
    values: dict[str, dict[str, float]] = {}
    intervals: dict[str, dict[str, tuple[float, float]]] = {}
    about: dict = {}
    generations = _generations(doc[COVERS], where) if COVERS in doc else None
    for level, section in doc.items():
        if level == COVERS:
            continue
        if level == ABOUT:
            if not isinstance(section, Mapping):
                raise error(where, ABOUT, "must be a table", section)
            about = dict(section)
            continue
        if not isinstance(section, Mapping):
            if isinstance(level, str) and level.strip() and not (
                    level == "*" or level in GENERATIONS or generation_of(level)):
                raise error(where, level, "unknown top-level key"
                            + did_you_mean(level, [COVERS, ABOUT]) + "; a constants file holds "
                            f"'{COVERS} = [...]', an [about] table and tables of constants "
                            "(levels: '*', a GPU generation or a GPU name)", section)
            raise error(where, str(level), "must be a table of constants (a level: '*', a GPU "
                        "generation or a GPU name)", section)
        level = _level(level, where)
        gen = level if level in GENERATIONS else generation_of(level)
        if generations is not None and level != "*" and gen is not None \
                and gen not in generations:
            raise error(where, level, f"level of generation {gen}, which the file's "
                        f"{COVERS} ({', '.join(generations) or 'none'}) does not list")
        for name, raw in section.items():
            key = f"{level}.{name}"
            if name not in INFO:
                raise error(where, key, "unknown constant" + did_you_mean(str(name), list(INFO))
                            + "; known constants: " + ", ".join(INFO))
            value, interval = _entry(name, raw, where, key)
            values.setdefault(level, {})[name] = value
            if interval is not None:
                intervals.setdefault(level, {})[name] = interval
    return ConstantsTable(values, intervals, where, about, generations)


def read_constants(path: str | os.PathLike) -> ConstantsTable:
    """Read and check a constants file (``.toml`` or ``.json``); a path that is not one is
    an :class:`~cpo_opt.inputs.ArgumentError` of ``constants`` (``--constants``)."""
    text = os.fspath(path)
    if not isinstance(text, str) or not text.strip():
        raise ArgumentError("constants", "empty path; give a constants file (.toml or .json, "
                            "written by calibrate --out)")
    where = show_path(text)
    p = pathlib.Path(text)
    try:
        if not p.exists():
            raise ArgumentError("constants", f"{where}: no such constants file")
        if p.is_dir():
            raise ArgumentError("constants", f"{where}: a folder, not a constants file")
        if not p.is_file():
            raise ArgumentError("constants", f"{where}: not a regular file")
    except OSError as exc:
        raise ArgumentError("constants", f"{where}: unusable path: {exc.strerror or exc}") \
            from None
    if p.suffix.lower() not in (".toml", ".json"):
        raise ArgumentError("constants", f"{where}: a constants file ends in .toml or .json")
    return table_from_document(read_document(p, where), where)


def show_path(text: str) -> str:
    return text if len(text) <= 120 else text[:100] + f"... ({len(text)} characters)"


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
    if table.generations is not None:
        lines += [f"{COVERS} = {_scalar(list(table.generations))}", ""]
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


def dumps_json(table: ConstantsTable, header: str = "") -> str:
    """The JSON text of a constants table (the same document as :func:`dumps`; the header
    goes into ``about.comment``)."""
    import json
    doc: dict[str, Any] = {}
    if table.generations is not None:
        doc[COVERS] = list(table.generations)
    about = dict(table.about)
    if header:
        about.setdefault("comment", " ".join(header.split()))
    if about:
        doc[ABOUT] = about
    for level, entries in table.entries().items():
        doc[level] = {n: {k: v for k, v in e.items() if v is not None}
                      for n, e in entries.items()}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


WRITER = "cpo-opt calibrate"
"""``about.written_by`` of the files ``calibrate`` writes: how ``--out`` tells its own
earlier output (which it may replace) from a file it must not touch."""


def written_by_calibrate(head: bytes) -> bool:
    """Whether the first bytes of a file are a constants file ``calibrate`` wrote."""
    try:
        text = head.decode("utf-8-sig")
    except UnicodeDecodeError:
        return False
    import json
    import tomllib
    for parse in (tomllib.loads, json.loads):
        try:
            doc = parse(text)
        except (ValueError, RecursionError):
            continue
        about = doc.get(ABOUT) if isinstance(doc, dict) else None
        return isinstance(about, dict) and about.get("written_by") == WRITER
    return False


def check_out(path: str | os.PathLike, flag: str = "--out"):
    """Check a constants output file before the fit (:func:`cpo_opt.inputs.writes.check_file`:
    ``.toml`` or ``.json``, no link, no folder, no file calibrate did not write)."""
    from cpo_opt.inputs import writes
    return writes.check_file(path, flag=flag, formats=("toml", "json"), owner=WRITER,
                             ours=written_by_calibrate)


def write_constants(path, table: ConstantsTable, header: str = "",
                    comments: Mapping[str, list[str]] | None = None) -> pathlib.Path:
    """Write ``table`` as a constants file that :func:`read_constants` reads back: TOML or
    JSON by the extension; checked, staged and renamed into place
    (:mod:`cpo_opt.inputs.writes`). ``path`` may be a checked target (:func:`check_out`)."""
    from cpo_opt.inputs import writes
    target = path if isinstance(path, writes.Target) else check_out(path)
    text = dumps_json(table, header) if target.format == "json" else dumps(table, header,
                                                                             comments)
    table_from_document(_parse_back(text, target.format), str(target.path))  # the schema
    return writes.write_file(target, text)


def _parse_back(text: str, fmt: str) -> Any:
    import json
    import tomllib
    return json.loads(text) if fmt == "json" else tomllib.loads(text)
