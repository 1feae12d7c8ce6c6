"""Where input documents come from: TOML/JSON files and the presets shipped in the package.

A *reference* (``--model``, ``--system``, ``--plan``, a scenario's ``model = ...``) is resolved
in this order: an existing path ending in ``.toml`` or ``.json`` is read; otherwise a preset
name under ``cpo_opt/presets/<kind>/<name>.toml``; otherwise it is a bad input. A dict is an
inline document. Every failure raises :class:`InputError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import tomllib
from typing import Any

from cpo_opt.inputs.errors import ArgumentError, InputError  # noqa: F401 (re-exported)

PRESETS_DIR = pathlib.Path(__file__).parent.parent / "presets"
"""Root of the shipped presets (tests point it elsewhere)."""

KINDS: dict[str, str] = {
    "models": "model",
    "systems": "system",
    "gpus": "gpu",
    "plans": "plan",
    "scenarios": "scenario",
    "stacks": "stack",
}
"""Preset kinds (sub-directories of :data:`PRESETS_DIR`) and their singular names."""

SUFFIXES = (".toml", ".json")
MAX_INPUT_BYTES = 4 * 2**20
"""Largest input file read (4 MiB; the largest shipped file is a few KB). Checked before
parsing: at most this many bytes (plus one) are ever read, so a huge or endless file (a
400 MB file, ``/dev/zero`` through a link) costs no memory before it is refused."""
_PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")
_ABOUT_KEYS = ("description", "sources", "notes")




@dataclasses.dataclass(frozen=True)
class Source:
    """A resolved reference.

    Attributes:
      doc: the parsed top-level table.
      where: the name used in error messages (the path as given, ``model preset 'x'``, ...).
      name: the file stem, the preset name, or for an inline table the kind's singular name.
      path: the file read, or None for an inline table.
      inline: True for a dict given directly (not read from a file).
    """

    doc: dict
    where: str
    name: str
    path: pathlib.Path | None
    inline: bool


def _parse_toml(text: str, where: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{where}: malformed TOML: {exc}") from None
    except ValueError as exc:  # an integer of more than 4300 digits (sys.int_info)
        raise InputError(f"{where}: malformed TOML: {_too_long(exc)}") from None


def _too_long(exc: ValueError) -> str:
    text = str(exc)
    return ("a number with too many digits" if "digits" in text or "limit" in text
            else text.splitlines()[0] if text else "bad value")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(Exception):
    pass


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{where}: malformed JSON: {exc.msg} (at line {exc.lineno}, column {exc.colno})"
        ) from None
    except _DuplicateKey as exc:
        raise InputError(f"{where}: {exc.args[0]}: duplicate key") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise InputError(f"{where}: malformed JSON: {_too_long(exc)}") from None


def read_document(path: pathlib.Path, where: str) -> dict:
    """Read and parse one TOML or JSON file whose top level must be a table."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{where}: cannot read file: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"{where}: file larger than {MAX_INPUT_BYTES // 2**20} MiB, the input "
                         "size limit (cpo_opt.inputs.sources.MAX_INPUT_BYTES)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where}: not UTF-8 text (bad byte at offset {exc.start})") from None
    parse = _parse_json if path.suffix.lower() == ".json" else _parse_toml
    try:
        doc = parse(text, where)
    except RecursionError:
        raise InputError(f"{where}: nested too deeply") from None
    if not isinstance(doc, dict):
        raise InputError(f"{where}: the top level must be a table (got {type(doc).__name__})")
    return doc


def preset_names(kind: str) -> list[str]:
    """Names of the shipped presets of ``kind`` (sorted)."""
    folder = PRESETS_DIR / kind
    return sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []


def _case_insensitive(kind: str, text: str) -> str | None:
    """The preset of ``kind`` whose name equals ``text`` ignoring case (None if not one)."""
    hits = [n for n in preset_names(kind) if n.lower() == text.lower()]
    return hits[0] if len(hits) == 1 else None


def did_you_mean(text: str, names: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest names, or empty (difflib ratio >= 0.6)."""
    import difflib
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(text.lower(), list(lowered), n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(lowered[c]) for c in close) + "?)"


def _not_found(text: str, kind: str | None, context: str | None) -> InputError:
    head = f"{context}: {text!r}" if context else text
    if kind is None:
        return InputError(f"{head}: no such file (expected a .toml or .json file)")
    inline = " (or inline KEY=VALUE pairs such as tp=8,pp=4)" if kind == "plans" else ""
    return InputError(f"{head}: no such file or {KINDS[kind]} preset{inline}"
                      f"{did_you_mean(text, preset_names(kind))}; "
                      "`cpo-opt presets` lists presets")


def resolve(ref: Any, kind: str | None, where: str | None = None,
            base: pathlib.Path | None = None, context: str | None = None) -> Source:
    """Resolve a reference to a parsed document (see :func:`_resolve`); a path the operating
    system refuses (too long, a NUL byte) is a bad input too."""
    try:
        return _resolve(ref, kind, where, base, context)
    except InputError:
        raise
    except (OSError, ValueError) as exc:
        from cpo_opt.inputs.tables import show
        head = context or where or KINDS.get(kind, "input")
        reason = getattr(exc, "strerror", None) or str(exc).split(":")[0]
        raise InputError(f"{head}: {show(os.fspath(ref))}: unusable path: {reason}") from None


def _resolve(ref: Any, kind: str | None, where: str | None = None,
             base: pathlib.Path | None = None, context: str | None = None) -> Source:
    """Resolve a reference to a parsed document.

    Args:
      ref: a path, a preset name, or a dict (an inline document).
      kind: the preset kind searched (a key of :data:`KINDS`), or None for files only.
      where: overrides the name used in error messages.
      base: directory that relative paths are relative to (a scenario file's directory).
      context: prefix of a not-found message (``"s.toml: scenario.model"``).
    """
    singular = KINDS.get(kind, "input") if kind else "input"
    if isinstance(ref, dict):
        return Source(ref, where or f"<inline {singular}>", singular, None, True)
    if not isinstance(ref, (str, os.PathLike)):
        raise InputError(f"{context or where or singular}: expected a file name, a preset name "
                         f"or a table (got {type(ref).__name__})")
    text = os.fspath(ref)
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{context or where or singular}: empty file or preset name")
    path = pathlib.Path(text)
    if base is not None and not path.is_absolute():
        path = base / path
    if path.suffix.lower() in SUFFIXES:
        if not path.exists():
            head = f"{context}: {str(path)!r}" if context else str(path)
            raise InputError(f"{head}: no such file")
        if not path.is_file():
            raise InputError(f"{where or path}: not a regular file")
        label = where or str(path)
        return Source(read_document(path, label), label, path.stem, path, False)
    if kind is not None and _PRESET_NAME.match(text):
        preset = PRESETS_DIR / kind / f"{text}.toml"
        if not preset.is_file() and not path.exists():
            text = _case_insensitive(kind, text) or text  # "GB200-NVL72" -> "gb200-nvl72"
            preset = PRESETS_DIR / kind / f"{text}.toml"
        if preset.is_file():
            label = where or f"{singular} preset '{text}'"
            return Source(read_document(preset, label), label, text, preset, False)
    if path.is_file():
        raise InputError(f"{where or path}: input files must end in .toml or .json")
    if path.exists():  # a directory, a device (/dev/zero), a pipe
        kind_of = "a directory" if path.is_dir() else "not a regular file"
        raise InputError(f"{where or path}: {kind_of}; expected a .toml or .json file"
                         + (f" or a {KINDS[kind]} preset name" if kind else ""))
    raise _not_found(text, kind, context)


def preset_path(kind: str, name: str) -> pathlib.Path:
    """Path of the shipped preset ``name`` of ``kind`` (InputError when there is none)."""
    if kind not in KINDS:
        raise InputError(f"{kind}: unknown preset kind; kinds: {', '.join(KINDS)}")
    path = PRESETS_DIR / kind / f"{name}.toml"
    if _PRESET_NAME.match(name) and not path.is_file():
        path = PRESETS_DIR / kind / f"{_case_insensitive(kind, name) or name}.toml"
    if not _PRESET_NAME.match(name) or not path.is_file():
        raise _not_found(name, kind, None)
    return path


def find_preset(name: str) -> tuple[str, pathlib.Path]:
    """``(kind, path)`` of the preset called ``name`` (``"systems/gb200-nvl72"`` picks the
    kind); case-insensitive; InputError with the closest names when there is none or when
    several kinds hold it."""
    from cpo_opt.inputs.tables import show
    if not isinstance(name, str) or not name.strip():
        raise InputError("presets show: NAME: empty; `cpo-opt presets` lists presets")
    kind, _, bare = name.rpartition("/")
    kinds = [kind] if kind else list(KINDS)
    if kind and kind not in KINDS:
        raise InputError(f"presets show: {show(name)}: unknown preset kind {show(kind)}; "
                         f"kinds: {', '.join(KINDS)}")
    if not _PRESET_NAME.match(bare) or len(bare) > 200:  # before any file-system call
        every = [n for k in kinds for n in preset_names(k)]
        raise InputError(f"presets show: {show(name)}: no such preset"
                         f"{did_you_mean(bare[:200], every)}; `cpo-opt presets` lists presets")
    hits = []
    for k in kinds:
        stem = bare if (PRESETS_DIR / k / f"{bare}.toml").is_file() else _case_insensitive(k, bare)
        if stem and _PRESET_NAME.match(stem):
            hits.append((k, PRESETS_DIR / k / f"{stem}.toml"))
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise InputError(f"presets show: {name}: several presets have this name; say which: "
                         + ", ".join(f"{k}/{p.stem}" for k, p in hits))
    every = [n for k in kinds for n in preset_names(k)]
    raise InputError(f"presets show: {show(name)}: no such preset{did_you_mean(bare, every)}; "
                     "`cpo-opt presets` lists presets")


def list_presets() -> dict[str, list[tuple[str, str]]]:
    """Every shipped preset: kind -> sorted ``[(name, description)]``.

    The description is the file's ``[about] description`` (empty when absent). A malformed
    preset file raises :class:`InputError` naming it.
    """
    out: dict[str, list[tuple[str, str]]] = {}
    for kind, singular in KINDS.items():
        entries = []
        folder = PRESETS_DIR / kind
        files = sorted(folder.glob("*.toml")) if folder.is_dir() else []
        for path in files:
            where = f"{singular} preset '{path.stem}'"
            doc = read_document(path, where)
            about = doc.get("about", {})
            check_about(about, where)
            entries.append((path.stem, about.get("description", "")))
        out[kind] = entries
    return out


def check_about(about: Any, where: str) -> None:
    """Check the optional ``[about]`` table: description, sources, notes."""
    if not isinstance(about, dict):
        raise InputError(f"{where}: about: must be a table (got {type(about).__name__})")
    for key, value in about.items():
        if key not in _ABOUT_KEYS:
            raise InputError(f"{where}: about.{key}: unknown key; known keys: "
                             + ", ".join(_ABOUT_KEYS))
        is_str_list = isinstance(value, list) and all(isinstance(v, str) for v in value)
        if key == "description" and not isinstance(value, str):
            raise InputError(f"{where}: about.description: must be a string")
        if key == "sources" and not is_str_list:
            raise InputError(f"{where}: about.sources: must be a list of strings")
        if key == "notes" and not (isinstance(value, str) or is_str_list):
            raise InputError(f"{where}: about.notes: must be a string or a list of strings")


def check_top(doc: dict, tables: tuple[str, ...], where: str) -> None:
    """Check that ``doc`` has exactly the top-level ``tables`` (all required) plus ``[about]``."""
    expected = ", ".join(f"[{t}]" for t in tables) + " and an optional [about]"
    for key in doc:
        if key not in tables and key != "about":
            raise InputError(f"{where}: {key}: unknown top-level key; expected {expected}")
    for table in tables:
        if table not in doc:
            raise InputError(f"{where}: {table}: missing required table [{table}]")
    if "about" in doc:
        check_about(doc["about"], where)


def table_of(doc: dict, name: str, where: str, label: str | None = None) -> dict:
    """``doc[name]``, which must be a table."""
    value = doc[name]
    if not isinstance(value, dict):
        raise InputError(f"{where}: {label or name}: must be a table (got {type(value).__name__})")
    return value
