"""One input table checked against :mod:`cpo_opt.inputs.schema`: types, minimums, defaults, text values.

Values stay in file units here (GB/s, TFLOP/s, us); :func:`to_si` converts them at the end.
Canonical value types: int keys -> ``int``, float keys -> ``float``, bool keys -> ``bool``,
enum keys -> the choice string, except numeric enums (``zero``) -> ``int``.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from typing import Any

import numpy as np

from cpo_opt.inputs.schema import FLOAT_RANGE, SECTIONS, Key, range_of
from cpo_opt.inputs.errors import InputError

_MISSING = object()
_INT_TEXT = re.compile(r"[+-]?[0-9]+")

DEFAULT_LABELS = {"model.head_dim": "hidden / heads = {hidden} / {heads}"}
"""How a computed default is described when it is not a whole number."""


def show(value: Any) -> str:
    """A short one-line rendering of a user value for ``(got ...)``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)) \
            and abs(int(value)).bit_length() > 200:  # str() of > 4300 digits raises
        return f"an integer of about {int(abs(int(value)).bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, numbers.Number) and not isinstance(value, (bool, np.bool_)):
        text = str(value)
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def error(where: str, key: str, rule: str, value: Any = _MISSING) -> InputError:
    """The InputError ``<where>: <key>: <rule> (got <value>)``."""
    message = f"{where}: {key}: {rule}"
    if value is not _MISSING:
        message += f" (got {show(value)})"
    return InputError(message)


def rule_of(key: Key) -> str:
    """``Key.rule``, noting that ``zero`` also takes integers."""
    rule = key.rule
    if _numeric_enum(key):
        rule += " (a string or an integer)"
    return rule


def _numeric_enum(key: Key) -> bool:
    return key.kind == "enum" and all(c.isdigit() for c in key.choices)


def _is_bool(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_))


def _check_minimum(key: Key, value: float, where: str, dotted: str, given: Any) -> None:
    if key.minimum is not None:
        ok = value > key.minimum if key.strict else value >= key.minimum
        if not ok:
            raise error(where, dotted, rule_of(key), given)
    _check_range(key, value, where, dotted, given)


def number(x: float) -> str:
    """A range end for messages: whole numbers in full (134217728), others as ``%g``."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def range_rule(key: Key, dotted: str) -> str:
    low, high = range_of(key, dotted)
    return f"must be between {number(low)} and {number(high)} (physical range, schema.RANGES)"


def _check_range(key: Key, value: float, where: str, dotted: str, given: Any) -> None:
    """The documented physical range (:data:`cpo_opt.inputs.schema.RANGES`), then finiteness
    of the value converted to SI: a finite file value can still overflow after scaling. A
    float whose range starts at 0 takes 0 or a value of at least :data:`schema.FLOAT_RANGE`'s
    low end (1e-12): 1e-320 is a denormal, no latency or energy anyone meant."""
    low, high = range_of(key, dotted)
    if not low <= value <= high:
        raise error(where, dotted, range_rule(key, dotted), given)
    tiny = FLOAT_RANGE[0]
    if key.kind == "float" and value != 0 and abs(value) < tiny:
        raise error(where, dotted, f"must be 0 or between {number(tiny)} and {number(high)} "
                    "(physical range, schema.RANGES)", given)
    if not math.isfinite(float(value) * key.scale):
        raise error(where, dotted, "is not finite after conversion to SI units", given)


def _as_int(key: Key, value: Any, where: str, dotted: str) -> int:
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise error(where, dotted, rule_of(key), value)
    if isinstance(value, numbers.Integral):
        return int(value)
    number = float(value)
    if not (math.isfinite(number) and number.is_integer()):
        raise error(where, dotted, rule_of(key), value)
    return int(number)


def _as_float(key: Key, value: Any, where: str, dotted: str) -> float:
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise error(where, dotted, rule_of(key), value)
    number = float(value)
    if not math.isfinite(number):
        raise error(where, dotted, "must be finite", value)
    return number


def _as_enum(key: Key, value: Any, where: str, dotted: str) -> str | int:
    if _numeric_enum(key):
        is_int = isinstance(value, numbers.Integral) and not _is_bool(value)
        if (is_int or isinstance(value, str)) and str(value) in key.choices:
            return int(value)
    elif isinstance(value, str) and value in key.choices:
        return value
    raise error(where, dotted, rule_of(key), value)


def check_value(key: Key, value: Any, where: str, dotted: str) -> Any:
    """Check one file value against ``key``; return its canonical file-unit form."""
    if key.kind == "int":
        result = _as_int(key, value, where, dotted)
    elif key.kind == "float":
        result = _as_float(key, value, where, dotted)
    elif key.kind == "bool":
        if not _is_bool(value):
            raise error(where, dotted, "must be true or false", value)
        return bool(value)
    elif key.kind == "enum":
        return _as_enum(key, value, where, dotted)
    elif key.kind == "str":
        if not isinstance(value, str):
            raise error(where, dotted, "must be a string", value)
        return value
    else:  # a schema bug, not a user error
        raise TypeError(f"schema key {dotted} has unknown kind {key.kind!r}")
    _check_minimum(key, result, where, dotted, value)
    return result


def parse_text(key: Key, text: str, where: str, dotted: str) -> Any:
    """Parse a command-line value (``--plan tp=8``, ``--set k=v``) with ``key``'s type."""
    raw = text.strip()
    if not raw:
        raise error(where, dotted, "empty value")
    value: Any = raw
    digits = raw.lstrip("+-")
    if digits.isdigit() and len(digits) > 300 and key.kind in ("int", "float"):
        # int() refuses > 4300 digits; say what is wanted
        raise error(where, dotted, f"{range_rule(key, dotted)} (got an integer of "
                    f"{len(digits)} digits)")
    if key.kind == "int" and not _INT_TEXT.fullmatch(raw):
        # an integer key takes an integer literal: "1e0", "8.0", "1_0" are refused
        raise error(where, dotted, "must be an integer (digits only, e.g. 8)", raw)
    if key.kind == "int" or (key.kind == "enum" and _numeric_enum(key) and raw.isdigit()
                             and raw.isascii()):
        value = _number(raw, int)
    elif key.kind == "float":
        value = _number(raw, float)
    elif key.kind == "bool":
        words = {"true": True, "1": True, "false": False, "0": False}
        if raw.lower() not in words:
            raise error(where, dotted, "must be true, false, 1 or 0", raw)
        value = words[raw.lower()]
    return check_value(key, value, where, dotted)


def _number(text: str, kind: type) -> Any:
    """``text`` as an int (or an integral float) or a float; the text itself if neither."""
    try:
        return kind(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _unknown(where: str, dotted: str, name: str, known: list[str]) -> InputError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return error(where, dotted, f"unknown key; {hint}known keys: {', '.join(known)}")


def _computed_default(key: Key, values: dict, where: str, dotted: str) -> Any:
    """A default computed from other keys; an error names those keys, not only ``dotted``
    (which the user never wrote)."""
    value = key.default(values)
    if key.kind == "int":
        if not float(value).is_integer():
            label = DEFAULT_LABELS.get(dotted, "the default").format(**values)
            raise error(where, dotted,
                        f"{label} is not a whole number; set {key.name} explicitly", value)
        value = int(value)
    try:
        return check_value(key, value, where, dotted)
    except InputError:
        section = dotted.rpartition(".")[0]
        given = ", ".join(f"{section}.{k} = {show(v)}" for k, v in values.items()
                          if isinstance(v, numbers.Real) and not _is_bool(v))
        low, high = range_of(key, dotted)
        raise error(where, dotted, f"not given, and its default computed from the other keys "
                    f"({given}) is outside [{number(low)}, {number(high)}]; set {key.name} "
                    "explicitly or change those keys", value) from None


def resolve_table(section: str, table: Any, where: str, extra: tuple[str, ...] = ()) -> dict:
    """Check the table of ``section`` (a key of ``schema.SECTIONS``) and fill its defaults.

    Args:
      section: ``"model"``, ``"model.moe"``, ``"gpu"``, ``"plan"``, ...; also the key prefix
        in messages.
      table: the table as read.
      where: the file (or ``--plan``, a case) named in messages.
      extra: further keys allowed in the table and handled by the caller (``moe``, ``preset``).

    Returns:
      ``{key: value}`` in schema order, file units, defaults filled. Optional keys without a
      default (``matmul_tflops_fp8``, ``global_batch``) are left out when absent.
    """
    keys = SECTIONS[section]
    if not isinstance(table, dict):
        raise error(where, section, "must be a table", table)
    known = [k.name for k in keys] + list(extra)
    for name in table:
        if name not in known:
            raise _unknown(where, f"{section}.{name}", name, known)
    values: dict[str, Any] = {}
    for key in keys:
        dotted = f"{section}.{key.name}"
        if key.name in table:
            values[key.name] = check_value(key, table[key.name], where, dotted)
        elif key.required:
            raise error(where, dotted, "missing required key")
        elif callable(key.default):
            values[key.name] = _computed_default(key, values, where, dotted)
        elif key.default is not None:
            values[key.name] = check_value(key, key.default, where, dotted)
    return values


def key_of(section: str, name: str, where: str, extra: tuple[Key, ...] = ()) -> Key:
    """The key ``name`` of ``section`` (or of ``extra``); an unknown name is a bad input."""
    keys = SECTIONS[section] + tuple(extra)
    for key in keys:
        if key.name == name:
            return key
    raise _unknown(where, f"{section}.{name}", name, [k.name for k in keys])


def to_si(keys: tuple[Key, ...], values: dict) -> dict[str, float]:
    """``{attr: SI float}`` for the numeric, bool and enum keys present in ``values``."""
    out = {}
    for key in keys:
        if key.name not in values or key.kind == "str":
            continue
        value = values[key.name]
        if key.kind == "enum":
            value = key.choices[str(value)]
        out[key.attr] = float(value) * key.scale
    return out
