"""Input files, presets, inline plans and inline tables -> the config dataclasses.

Every bad input raises :class:`InputError`, whose ``str()`` is one line naming where (the file,
``model preset 'x'``, ``--plan``, ``--set``, ``cases.toml: case[3] 'id'``), the dotted key
(``scale_up.bandwidth_GB_s``, ``plan.tp``, ``model.moe.experts``) and the rule broken.

A dict given as a reference is an inline document: ``{"model": {...}}`` or just the inner
``[model]`` table (with optional ``moe``/``mla`` sub-tables); ``{"plan": {...}}`` or the inner
plan table; a system dict always has the file's structure (``gpu``, ``scale_up``, ...).

``values`` layouts (file units, defaults filled, optional keys without a default left out):

* ``ModelSpec.values``: ``{"model": {...}, "model.moe": {...}, "model.mla": {...}}`` flat by
  section (the keys of ``schema.SECTIONS``); ``model.moe``/``model.mla`` only when the model
  has them. ``load_model`` accepts this dict back.
* ``SystemSpec.values``: ``{"gpu": {...}, "scale_up": {...}, "scale_out": {...},
  "cluster": {"gpus": n}}``; ``gpu`` is merged with its ``preset`` and holds no ``preset`` key.
  ``load_system`` accepts this dict back.
* ``PlanSpec.values``: the flat resolved plan ``{"tp", "pp", "dp", "cp", "ep", "etp", "edp",
  "vpp", "micro_batch", "global_batch", "sequence_parallel", "recompute", "zero", "dtype",
  "overlap_*"}`` with string enums, ``zero`` an int and derived ``dp``/``edp``. It is a valid
  input of :func:`plan_from_values` (``dp``/``edp`` are then checked, not used).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import pathlib
import re
from typing import Any

from cpo_opt.inputs.constants_file import ConstantsTable, for_gpu
from cpo_opt.inputs import plan_rules
from cpo_opt.inputs import schema
from cpo_opt.model.config import GPU, Fabric, Model, Plan, System
from cpo_opt.model.constants import constants_for
from cpo_opt.model.structure import Structure, structure_of
from cpo_opt.inputs.schema import Key
from cpo_opt.inputs.sources import (ArgumentError, InputError, check_top, list_presets, preset_path, read_document,
                             resolve, table_of)
from cpo_opt.inputs.tables import check_value, error, key_of, parse_text, resolve_table, to_si

__all__ = [
    "InputError", "ArgumentError", "ModelSpec", "SystemSpec", "PlanSpec", "Case", "Scenario",
    "load_model", "load_system", "load_plan", "plan_from_values", "plan_arg", "system_with", "load_cases",
    "load_scenario", "list_presets", "preset_path",
]

@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A checked model: the dataclass (SI), its name, where it came from, file-unit values."""

    model: Model
    name: str
    origin: str
    values: dict


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    """A checked system (GPU, two fabric tiers, cluster size)."""

    system: System
    name: str
    gpu_name: str
    origin: str
    values: dict
    constants: dict | None = None
    """The constants table the system was loaded with (None: the shipped constants)."""


@dataclasses.dataclass(frozen=True)
class PlanSpec:
    """A checked plan for one model on one system, on one software stack.

    Attributes:
      plan: the :class:`~cpo_opt.model.config.Plan` pytree (SI, numeric codes).
      origin: where the plan came from (messages).
      values: the resolved plan table (file units, every key; ``dp``/``edp`` derived).
      stack: the name of the software stack it was resolved on.
      options: ``{key: {"value", "from"[, "note"]}}`` for every software option of a stack
        (:data:`cpo_opt.inputs.stacks.OPTIONS`): ``from`` is ``"plan"`` (the plan set it),
        ``"stack"`` (the stack's default) or ``"search"`` (an optimizer chose it).
      placement: ``{"mode", "working_gpus", "idle_gpus", "why"}``.
      checked_for: the model and system it was checked against (:func:`fingerprint`);
        :func:`plan_for` re-checks it before it runs on any other.
    """

    plan: Plan
    origin: str
    values: dict
    stack: str = ""
    options: dict = dataclasses.field(default_factory=dict)
    placement: dict = dataclasses.field(default_factory=dict)
    checked_for: str | None = None


@dataclasses.dataclass(frozen=True)
class Case:
    """One measured case of a ``validate`` cases file."""

    id: str
    source: str
    model: ModelSpec
    system: SystemSpec
    plan: PlanSpec
    measured_step_time_s: float


@dataclasses.dataclass(frozen=True)
class Scenario:
    """A named model + system (+ optional plan, batch and training tokens)."""

    name: str
    description: str
    model: ModelSpec
    system: SystemSpec
    plan: PlanSpec | None
    global_batch: int | None
    tokens: float | None
    origin: str
    stack: str | None = None
    """The scenario's ``stack`` (a preset name or a path), None when it names none."""
    plan_table: dict | None = None
    """The plan as the scenario gives it (before a stack filled it), with its batch."""


# --------------------------------------------------------------------------- model
_DENSE = dict(experts=0.0, top_k=0.0, expert_ffn_hidden=0.0, shared_experts=0.0,
              capacity_factor=0.0)
_NO_MLA = dict(mla=0.0, q_lora_rank=0.0, kv_lora_rank=0.0, qk_nope_head_dim=0.0,
               qk_rope_head_dim=0.0, v_head_dim=0.0)


def load_model(ref: Any, where: str | None = None) -> ModelSpec:
    """Load a model from a file, a preset name or a dict (see the module docstring)."""
    return _load_model(ref, where)


def _load_model(ref, where=None, base=None, context=None) -> ModelSpec:
    src = resolve(ref, "models", where, base, context)
    doc = src.doc
    if src.inline:
        doc = _inline_model_document(doc)
    check_top(doc, ("model",), src.where)
    return model_from_table(doc["model"], src.where, src.name)


def _inline_model_document(doc: dict) -> dict:
    """A dict model as a document: wraps a bare [model] table; folds ``ModelSpec.values``."""
    if "model" not in doc:
        return {"model": doc}
    subs = {name: f"model.{name}" for name in ("moe", "mla")}
    if not any(flat in doc for flat in subs.values()) or not isinstance(doc["model"], dict):
        return doc
    table = dict(doc["model"])
    for name, flat in subs.items():
        if flat in doc:
            table[name] = doc[flat]
    return {"model": table, **{k: v for k, v in doc.items() if k not in subs.values()
                               and k != "model"}}


def model_from_table(table: Any, where: str, name: str) -> ModelSpec:
    """A model from the ``[model]`` table (holding optional ``moe``/``mla`` sub-tables)."""
    table = table_of({"model": table}, "model", where)
    if "name" not in table:
        table = {**table, "name": name}
    values = {"model": resolve_table("model", table, where, extra=("moe", "mla"))}
    for sub in ("moe", "mla"):
        if sub in table:
            values[f"model.{sub}"] = resolve_table(f"model.{sub}", table[sub], where)
    _check_model(values, where)
    return ModelSpec(_build_model(values), values["model"]["name"], where, values)


def _check_model(values: dict, where: str) -> None:
    """Rules between keys: kv_heads | heads, top_k <= experts, dense_layers <= layers, MLA."""
    m, moe = values["model"], values.get("model.moe")
    if m["heads"] % m["kv_heads"]:
        raise error(where, "model.kv_heads", f"must divide model.heads = {m['heads']}",
                    m["kv_heads"])
    if "model.mla" in values and m["kv_heads"] != m["heads"]:
        raise error(where, "model.kv_heads", f"must equal model.heads = {m['heads']} with "
                    "[model.mla] (MLA has no GQA)", m["kv_heads"])
    if moe is not None:
        if moe["top_k"] > moe["experts"]:
            raise error(where, "model.moe.top_k",
                        f"must be <= model.moe.experts = {moe['experts']}", moe["top_k"])
        if moe["dense_layers"] > m["layers"]:
            raise error(where, "model.moe.dense_layers",
                        f"must be <= model.layers = {m['layers']}", moe["dense_layers"])


def _build_model(values: dict) -> Model:
    fields = to_si(schema.MODEL_KEYS, values["model"])
    fields.pop("dtype", None)  # the default dtype of searches (model_dtype), not a formula input
    if "model.moe" in values:
        fields.update(to_si(schema.MOE_KEYS, values["model.moe"]))
    else:
        fields.update(_DENSE, dense_layers=fields["layers"])
    fields.update(_NO_MLA)
    if "model.mla" in values:
        fields.update(to_si(schema.MLA_KEYS, values["model.mla"]), mla=1.0)
    return Model(**fields)


# --------------------------------------------------------------------------- system
SYSTEM_TABLES = ("gpu", "scale_up", "scale_out", "cluster")


def load_system(ref: Any, where: str | None = None,
                overrides: dict[str, Any] | None = None,
                constants: dict[str, dict[str, float]] | None = None) -> SystemSpec:
    """Load a system; ``overrides`` (``--set``) replace file values before defaults are filled.

    ``overrides`` maps ``"section.key"`` to a string (parsed with the key's type) or a value.
    ``constants`` is a constants table (``--constants``; see
    :func:`cpo_opt.model.constants.constants_for`) replacing the shipped efficiency constants.
    """
    return _load_system(ref, where, overrides=overrides, constants=constants)


def _load_system(ref, where=None, base=None, context=None, overrides=None,
                 constants=None) -> SystemSpec:
    src = resolve(ref, "systems", where, base, context)
    return system_from_doc(src.doc, src.where, src.name, overrides, constants)


def system_from_doc(doc: Any, where: str, name: str,
                    overrides: dict[str, Any] | None = None,
                    constants: dict[str, dict[str, float]] | None = None) -> SystemSpec:
    """A system from a document holding ``gpu``, ``scale_up``, ``scale_out``, ``cluster``."""
    doc = table_of({"system": doc}, "system", where)
    check_top(doc, SYSTEM_TABLES, where)
    raw = {section: dict(table_of(doc, section, where)) for section in SYSTEM_TABLES}
    raw["gpu"] = _gpu_with_preset(raw["gpu"], where)
    _apply_overrides(raw, overrides or {})
    values = {section: resolve_table(section, raw[section], where) for section in SYSTEM_TABLES}
    if isinstance(constants, ConstantsTable):  # set aside on a GPU the file does not cover
        constants = for_gpu(constants, values["gpu"]["name"])
    return SystemSpec(_build_system(values, constants), name, values["gpu"]["name"], where,
                      values, constants)


def _gpu_with_preset(gpu: dict, where: str) -> dict:
    """The ``[gpu]`` table with its ``preset`` (a GPU preset file) merged underneath."""
    if "preset" not in gpu:
        return gpu
    name = gpu.pop("preset")
    if not isinstance(name, str):
        raise error(where, "gpu.preset", "must be a GPU preset name (a string)", name)
    try:
        path = preset_path("gpus", name)
    except InputError:
        raise error(where, "gpu.preset", "no such GPU preset; `cpo-opt presets` lists presets",
                    name) from None
    label = f"gpu preset '{name}'"
    doc = read_document(path, label)
    check_top(doc, ("gpu",), label)
    base = table_of(doc, "gpu", label)
    resolve_table("gpu", base, label)  # the preset must be valid on its own
    return {"name": name, **base, **gpu}


def _apply_overrides(raw: dict[str, dict], overrides: dict[str, Any]) -> None:
    """Put ``--set SECTION.KEY=VALUE`` values into the raw system tables, checked."""
    for dotted, value in overrides.items():
        section, _, name = str(dotted).partition(".")
        if section not in SYSTEM_TABLES or not name:
            raise error("--set", str(dotted),
                        "expected SECTION.KEY with SECTION one of " + ", ".join(SYSTEM_TABLES))
        key = key_of(section, name, "--set")
        if isinstance(value, str) and key.kind != "str":
            raw[section][name] = parse_text(key, value, "--set", dotted)
        else:
            raw[section][name] = check_value(key, value, "--set", dotted)


def _build_system(values: dict, constants: dict | None = None) -> System:
    gpu = {"matmul_flops_fp8": 0.0, **to_si(schema.GPU_KEYS, values["gpu"])}
    gpus = float(values["cluster"]["gpus"])
    scale_up = to_si(schema.SCALE_UP_KEYS, values["scale_up"])
    scale_out = to_si(schema.SCALE_OUT_KEYS, values["scale_out"])
    return System(gpu=GPU(**gpu), scale_up=Fabric(**scale_up),
                  scale_out=Fabric(domain_size=gpus, **scale_out), gpus=gpus,
                  constants=constants_for(values["gpu"]["name"], constants))


# --------------------------------------------------------------------------- plan
DERIVED_KEYS = (
    Key("dp", "dp", "int", "data parallel (derived; checked when given)", minimum=0, strict=True),
    Key("edp", "edp", "int", "expert data parallel (derived; checked when given)", minimum=0,
        strict=True),
    Key("microbatches", "microbatches", "int",
        "micro-batches per step, global_batch / (micro_batch * dp) (derived; checked when given)",
        minimum=0, strict=True),
)


def system_with(system: SystemSpec, hardware: dict[str, float]) -> SystemSpec:
    """``system`` with hardware values (``"section.key"`` -> file units) written in and checked
    like a file: the loaded-spec counterpart of :func:`cpo_opt.inputs.schema.with_fields`."""
    if not hardware:
        return system
    values = {k: dict(v) for k, v in system.values.items()}
    for key, v in hardware.items():
        section, name = key.split(".", 1)
        values[section][name] = int(round(v)) if float(v).is_integer() else float(v)
    return load_system(values, where=system.origin, constants=system.constants)


def load_plan(ref: Any, model: ModelSpec, system: SystemSpec,
              where: str | None = None, stack: Any = None) -> PlanSpec:
    """Load a plan: a file, a preset name, inline ``"tp=8,pp=16"`` (where ``--plan``) or a
    dict, resolved on ``stack`` (default: :data:`cpo_opt.inputs.stacks.DEFAULT_STACK`)."""
    table, label = _plan_table(ref, where)
    return plan_from_values(table, model, system, label, stack)


def _plan_table(ref, where=None, base=None, context=None) -> tuple[dict, str]:
    """The raw plan table of a reference and the name used in messages (``--plan`` for a
    text that is neither a file nor a preset, as for an inline plan)."""
    if isinstance(ref, str) and "=" in ref and not ref.strip().lower().endswith((".toml", ".json")):
        label = where or context or "--plan"
        return parse_inline_plan(ref, label), label
    if isinstance(ref, str) and where is None and context is None:
        context = "--plan"
    src = resolve(ref, "plans", where, base, context)
    doc = {"plan": src.doc} if src.inline and "plan" not in src.doc else src.doc
    check_top(doc, ("plan",), src.where)
    return table_of(doc, "plan", src.where), src.where


def parse_inline_plan(text: str, where: str = "--plan") -> dict:
    """``"tp=8, pp=16,ep=64"`` or ``"tp=8 pp=16 ep=64"`` (what the text tables print) ->
    ``{"tp": 8, "pp": 16, "ep": 64}`` (typed, checked values). The derived ``dp``, ``edp`` and
    ``microbatches`` may be given: they are checked against the plan, never used."""
    table: dict[str, Any] = {}
    for piece in re.sub(r"\s*=\s*", "=", text).replace(",", " ").split():
        name, sep, raw = piece.partition("=")
        name = name.strip()
        if not sep or not name:
            raise error(where, piece.strip(), "expected KEY=VALUE pairs separated by commas "
                        "or spaces, like tp=8,pp=4")
        key = key_of("plan", name, where, DERIVED_KEYS)
        if name in table:
            raise error(where, f"plan.{name}", "given twice")
        table[name] = parse_text(key, raw, where, f"plan.{name}")
    if not table:
        raise error(where, "plan", "empty plan; expected KEY=VALUE pairs like tp=8,pp=4")
    return table


def plan_from_values(values: dict, model: ModelSpec, system: SystemSpec,
                     where: str, stack: Any = None, searched: tuple[str, ...] = (),
                     score_plans=None) -> PlanSpec:
    """Check a plan table against the schema, the model and the system on a software stack
    (:mod:`cpo_opt.inputs.stacks`; ``None``: the default stack) and fill its defaults: keys
    the plan gives win, the stack's options fill the rest where they apply, the schema the
    remainder. ``placement = "auto"`` (the plan's or the stack's) becomes the better of
    contiguous and aligned placement for this job: both are scored by the model when they
    differ. A recompute module the stack sets to ``"fit"`` (:data:`~cpo_opt.inputs.stacks.
    FIT_OPTIONS`) and the plan does not set stays off where the plan fits in HBM, else the
    fastest set of such modules that makes it fit is turned on (:func:`_fit_memory`).
    ``searched``: option keys an optimizer chose (reported as ``"search"``).
    ``score_plans``: ``(model, system, {label: PlanSpec}) -> {label: (fits_memory,
    step_time_s)}`` scores candidate plans, the placements (labels ``contiguous``,
    ``aligned``) and the recompute sets (labels ``fit:...``) (default: one float64
    evaluation of each; :mod:`cpo_opt.analysis.batch` scores many plans in one batched
    call)."""
    from cpo_opt.inputs.stacks import FIT, OPTIONS, load_stack
    st = load_stack(stack)
    values = dict(values)
    given = {k for k in values if k not in ("microbatches", "dp", "edp")}
    table = resolve_table("plan", {k: v for k, v in values.items() if k != "microbatches"},
                          where, extra=("dp", "edp"))
    from_stack = {}
    fit: list[str] = []
    for key, value in st.options.items():
        if key not in given:
            from_stack[key] = table.get(key)
            table[key] = value
            if value == FIT:
                fit.append(key)
                table[key] = False
    candidates = ["contiguous", "aligned"] if table["placement"] == "auto" else [
        table["placement"]]
    tried: dict[str, Any] = {}
    for mode in candidates:
        try:
            tried[mode] = _resolved_spec({**table, "placement": mode}, values, model, system,
                                         where, from_stack)
        except InputError as exc:
            if len(candidates) == 1:
                raise
            tried[mode] = exc
    spec = _choose_placement(tried, model, system, where, score_plans)
    fit_notes: dict[str, str] = {}
    if fit:
        spec, fit_notes = _fit_memory(spec, fit, table, values, model, system, where,
                                      from_stack, score_plans)
    options = {}
    for key in OPTIONS:
        if key not in spec.values:
            continue
        src = "search" if key in searched else "plan" if key in given else (
            "stack" if key in st.options else "default")
        entry = {"value": spec.values[key], "from": src}
        if key == "placement" and table["placement"] == "auto":
            entry["policy"] = "auto"
        if key in fit_notes:
            entry["policy"] = FIT
        note = fit_notes.get(key) or spec.values.get("_notes", {}).get(key)
        if note:
            entry["note"] = note
        options[key] = entry
    resolved = {k: v for k, v in spec.values.items() if k != "_notes"}
    return dataclasses.replace(spec, values=resolved, stack=st.name, options=options)


def _resolved_spec(table: dict, values: dict, model: ModelSpec, system: SystemSpec,
                   where: str, from_stack: dict) -> PlanSpec:
    """One placement's checked plan (the rules of :mod:`cpo_opt.inputs.plan_rules`)."""
    resolved = plan_rules.resolve_plan(table, model.values, system.values, where, from_stack)
    derived = {**resolved, "microbatches": resolved["global_batch"]
               // (resolved["micro_batch"] * resolved["dp"])}
    for key in DERIVED_KEYS:
        if key.name in values:
            given = check_value(key, values[key.name], where, f"plan.{key.name}")
            if given != derived[key.name]:
                raise error(where, f"plan.{key.name}",
                            f"must equal the derived {key.name} = {derived[key.name]}", given)
    si = to_si(schema.PLAN_KEYS, {k: v for k, v in resolved.items() if k != "_notes"})
    gpus = int(system.values["cluster"]["gpus"])
    working = plan_rules.working_gpus(resolved, system.values)
    placement = {"mode": resolved["placement"], "working_gpus": working,
                 "idle_gpus": gpus - working, "why": ""}
    return PlanSpec(Plan(**si), where, resolved, placement=placement,
                    checked_for=fingerprint(model, system))


def _choose_placement(tried: dict, model: ModelSpec, system: SystemSpec,
                      where: str, score=None) -> PlanSpec:
    """The placement of an ``auto`` plan: the only valid one, the one that idles nothing
    when both lay the job out the same, else the faster of those that fit in memory (scored
    by the model: what a topology-aware scheduler does)."""
    ok = {m: s for m, s in tried.items() if isinstance(s, PlanSpec)}
    if not ok:
        raise tried["contiguous"]
    if len(ok) == 1:
        (mode, spec), = ok.items()
        if len(tried) > 1:
            other = next(m for m in tried if m != mode)
            why = (f"{mode}: {other} placement is not valid for this plan "
                   f"({str(tried[other]).split(': ', 1)[-1]})")
        else:
            why = f"{mode}: as the plan says"
        return _with_why(spec, why)
    c, a = ok["contiguous"], ok["aligned"]
    d = system.values["scale_up"]["domain_size"]
    if a.placement["idle_gpus"] == 0 and _same_layout(c, a, system):
        unit = max(c.values["tp"] * c.values["cp"], c.values["etp"] * c.values["ep"])
        return _with_why(c, f"contiguous: units of {unit} GPUs fill each {d}-GPU domain "
                            "exactly, so aligned placement is the same layout")
    scores = (score or _score_plans)(model, system, ok)
    fits = {m: bool(scores[m][0]) for m in ok}
    t = {m: float(scores[m][1]) for m in ok}
    if fits["contiguous"] != fits["aligned"]:
        best = "contiguous" if fits["contiguous"] else "aligned"
        other = "aligned" if best == "contiguous" else "contiguous"
        why = f"{best}: the {other} layout does not fit in HBM"
    else:
        best = "aligned" if t["aligned"] < t["contiguous"] else "contiguous"
        other = "aligned" if best == "contiguous" else "contiguous"
        why = (f"{best}: {t[other] / t[best]:.3f}x faster than {other} placement "
               f"({t[best]:.4g} s vs {t[other]:.4g} s per step)")
    spec = ok[best]
    if best == "aligned":
        unit = max(spec.values["tp"] * spec.values["cp"], spec.values["etp"] * spec.values["ep"])
        why += (f"; units of {unit} GPUs kept whole in each {d}-GPU domain, "
                f"{spec.placement['idle_gpus']} GPUs idle")
    return _with_why(spec, why)


def _fit_memory(spec: PlanSpec, fit: list[str], table: dict, values: dict, model: ModelSpec,
                system: SystemSpec, where: str, from_stack: dict, score=None
                ) -> tuple[PlanSpec, dict[str, str]]:
    """The plan with the stack's ``"fit"`` recompute modules (``fit``, all off in ``spec``)
    decided: all stay off where ``spec`` fits in HBM; else every non-empty set of them that
    applies to the plan is scored and the fastest that fits is turned on (ties: the smaller
    set); where none fits, all stay off (the plan is reported as not fitting). This is the
    remedy Megatron-Core's MoE README (core_v0.19.0, 'Memory Bottleneck') lists first:
    selective recomputation, low overhead. Returns the plan and ``{key: why}``."""
    base = spec.values
    scores = (score or _score_plans)(model, system, {"fit:none": spec})
    if scores["fit:none"][0]:
        return spec, {k: "off: the plan fits in HBM without it" for k in fit}
    table = {**table, "placement": base["placement"]}
    candidates: dict[str, PlanSpec] = {}
    modules: dict[str, tuple[str, ...]] = {}  # label -> the modules it turns on
    for n in range(1, len(fit) + 1):
        for keys in itertools.combinations(fit, n):
            cand = _resolved_spec({**table, **{k: True for k in keys}}, values, model, system,
                                  where, from_stack)
            if any(not cand.values[k] for k in keys):  # a module that does not apply
                continue
            label = "fit:" + "+".join(keys)
            candidates[label] = _with_why(cand, spec.placement["why"])
            modules[label] = keys
    if not candidates:
        return spec, {k: "off: the plan does not fit in HBM, and the module does not apply"
                      for k in fit}
    scored = (score or _score_plans)(model, system, candidates)
    fitting = [(scored[label][1], len(modules[label]), label) for label in candidates
               if scored[label][0]]
    if not fitting:
        return spec, {k: "off: the plan does not fit in HBM with or without it" for k in fit}
    _, _, best = min(fitting)
    chosen = candidates[best]
    notes = {k: ("on: the plan does not fit in HBM without it; the fastest set of the "
                 "stack's fit modules that fits" if chosen.values[k] else
                 "off: not needed in the fastest set of the stack's fit modules that fits")
             for k in fit}
    return chosen, notes


def _score_plans(model: ModelSpec, system: SystemSpec, ok: dict) -> dict:
    """``{label: (fits_memory, step_time_s)}`` of each candidate plan (placements, recompute
    sets): one exact evaluation each, in float64 (the precision of every result the library
    reports)."""
    import jax
    from cpo_opt.model.step import step_time_jit
    from cpo_opt.model.structure import structure_of
    c = next(iter(ok.values()))
    s = structure_of(model.model, c.plan.fp8, c.plan.flash_attention)
    out = {}
    with jax.enable_x64(True):
        for m, spec in ok.items():
            x = step_time_jit(model.model, system.system, spec.plan, structure=s)
            out[m] = (float(x.fits_memory) > 0.5, float(x.step_time_s))
    return out


def _same_layout(c: PlanSpec, a: PlanSpec, system: SystemSpec) -> bool:
    """True when aligned placement lays the job out exactly as contiguous placement does."""
    return a.values["dp"] == c.values["dp"] and a.placement["working_gpus"] == \
        c.placement["working_gpus"]


def _with_why(spec: PlanSpec, why: str) -> PlanSpec:
    return dataclasses.replace(spec, placement={**spec.placement, "why": why})


def fingerprint(model: ModelSpec, system: SystemSpec) -> str:
    """A digest of the model's and the system's values: what a plan was checked against."""
    text = json.dumps([model.values, system.values], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def plan_for(plan: PlanSpec, model: ModelSpec, system: SystemSpec, stack: Any = None
             ) -> PlanSpec:
    """``plan`` for ``model`` on ``system``: itself when it was checked against them, else
    checked again from its input keys on ``stack`` (default: the stack it was resolved on; a
    plan valid on one system may break a rule on another: its degrees must divide the other
    cluster); the error names the plan's origin."""
    if plan.checked_for is not None and plan.checked_for == fingerprint(model, system):
        return plan
    keys = {k.name for k in schema.PLAN_KEYS}
    return plan_from_values({k: v for k, v in plan.values.items() if k in keys}, model, system,
                            plan.origin, stack if stack is not None else (plan.stack or None))


PLAN_ARG_ALWAYS = ("tp", "pp", "cp", "ep", "etp", "vpp", "micro_batch", "global_batch",
                   "recompute", "zero", "dtype")
"""Keys :func:`plan_arg` always writes (the rest only where they differ from the default)."""


def plan_arg(values: dict, model: ModelSpec, system: SystemSpec, stack: Any = None) -> str:
    """The resolved plan ``values`` as an inline ``--plan`` string that resolves to exactly the
    same plan (hence the same step time) on ``stack``: ``"tp=1,pp=8,...,dtype=fp8"``.

    The degrees, batch, recompute, ZeRO and dtype (:data:`PLAN_ARG_ALWAYS`, ``global_batch``
    included) are always written; every other key only where dropping it resolves to another
    plan, i.e. where it differs from what the stack (or the schema) gives; the derived
    ``dp``/``edp``/``microbatches`` are left out."""
    from cpo_opt.inputs.stacks import load_stack
    stack = load_stack(stack)

    def text(v):
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    table = {k.name: values[k.name] for k in schema.PLAN_KEYS if k.name in values}
    target = plan_from_values(table, model, system, "plan_arg", stack).values
    for key in [k.name for k in schema.PLAN_KEYS if k.name not in PLAN_ARG_ALWAYS]:
        if key not in table:
            continue
        trial = {k: v for k, v in table.items() if k != key}
        try:
            same = plan_from_values(trial, model, system, "plan_arg", stack).values == target
        except InputError:
            same = False
        if same:
            table = trial
    return ",".join(f"{k}={text(v)}" for k, v in table.items())


# --------------------------------------------------------------------------- cases
_CASE_KEYS = ("id", "source", "model", "system", "overrides", "plan", "measured", "stack")
_STEP_TIME = Key("step_time_s", "step_time_s", "float", "measured step time, s", required=True,
                 minimum=0, strict=True)


def load_cases(path: str | os.PathLike, stack: Any = None) -> list[Case]:
    """Load a ``validate`` cases file: ``[[case]]`` tables, each self-contained; each plan
    is resolved on ``stack`` when given, else on the case's ``stack`` (a preset name or a
    path relative to the file), else on the default stack."""
    src = resolve(path, None)
    check_top(src.doc, ("case",), src.where)
    cases = src.doc["case"]
    if not isinstance(cases, list) or not all(isinstance(c, dict) for c in cases):
        raise error(src.where, "case", "must be an array of tables ([[case]])")
    if not cases:
        raise error(src.where, "case", "no [[case]] tables")
    out, seen = [], set()
    for index, table in enumerate(cases):
        case = _case(table, f"{src.where}: case[{index}]",
                     src.path.parent if src.path is not None else None, stack)
        if case.id in seen:
            raise error(f"{src.where}: case[{index}]", "id", "duplicate case id", case.id)
        seen.add(case.id)
        out.append(case)
    return out


def _flat_overrides(table: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """A case's ``overrides`` table -> ``{"section.key": value}``; TOML writes
    ``{ scale_up.domain_size = 8 }`` as nested tables and ``{ "scale_up.domain_size" = 8 }``
    flat: both are accepted."""
    if not isinstance(table, dict):
        raise error(where, prefix.rstrip(".") or "overrides", "must be a table of "
                    "SECTION.KEY = value (as --set)", table)
    out = {}
    for k, v in table.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat_overrides(v, where, name + "."))
        else:
            out[name] = v
    return out


def _case(table: dict, where: str, base: pathlib.Path | None = None, stack: Any = None) -> Case:
    """One ``[[case]]``: ``model``/``system`` are inline tables or preset names / paths
    (relative to the cases file), ``overrides`` applies ``--set``-style values to the system."""
    if isinstance(table.get("id"), str):
        where = f"{where} '{table['id']}'"
    for name in table:
        if name not in _CASE_KEYS:
            raise error(where, name, "unknown key; known keys: " + ", ".join(_CASE_KEYS))
    for name in ("id", "model", "system", "plan", "measured"):
        if name not in table:
            raise error(where, name, "missing required key")
    for name in ("id", "source"):
        if name in table and not isinstance(table[name], str):
            raise error(where, name, "must be a string", table[name])
    overrides = _flat_overrides(table["overrides"], where, "") if "overrides" in table else {}
    base = base or pathlib.Path.cwd()
    if isinstance(table["model"], str):
        with _inside(where, "model"):
            model = _load_model(table["model"], None, base, f"{where}: model")
    else:
        model = model_from_table(table["model"], where, table["id"])
    try:
        if isinstance(table["system"], str):
            with _inside(where, "system"):
                system = _load_system(table["system"], None, base, f"{where}: system",
                                      overrides=overrides)
        else:
            system = system_from_doc(table["system"], where, table["id"], overrides)
    except InputError as e:
        if str(e).startswith("--set"):  # name the case, not the flag
            raise InputError(f"{where}: overrides{str(e)[len('--set'):]}") from None
        raise
    if stack is None and "stack" in table:
        from cpo_opt.inputs.stacks import load_stack
        if not isinstance(table["stack"], str):
            raise error(where, "stack", "must be a stack preset name or a path", table["stack"])
        stack = load_stack(table["stack"], None, base, f"{where}: stack")
    plan = plan_from_values(table_of(table, "plan", where), model, system, where, stack)
    measured = table_of(table, "measured", where)
    for name in measured:
        if name != "step_time_s":
            raise error(where, f"measured.{name}", "unknown key; known keys: step_time_s")
    if "step_time_s" not in measured:
        raise error(where, "measured.step_time_s", "missing required key")
    step = check_value(_STEP_TIME, measured["step_time_s"], where, "measured.step_time_s")
    return Case(table["id"], table.get("source", ""), model, system, plan, step)


# --------------------------------------------------------------------------- scenarios
_SCENARIO_KEYS = ("model", "system", "plan", "global_batch", "tokens", "stack")
_SCENARIO_BATCH = Key("global_batch", "global_batch", "int", "sequences per step", minimum=0,
                      strict=True)
_SCENARIO_TOKENS = Key("tokens", "tokens", "float", "training tokens", minimum=0, strict=True)


def load_scenario(ref: Any, overrides: dict[str, Any] | None = None,
                  stack: Any = None) -> Scenario:
    """Load a scenario: ``[scenario]`` with model, system, optional plan, global_batch, tokens
    and stack (``stack``, when given, replaces the scenario's).

    ``model``/``system``/``plan`` are preset names, paths relative to the scenario file, or
    inline tables; ``global_batch`` fills the plan's when the plan has none. ``overrides``
    (``--set``) apply to the scenario's system as they would to ``--system``.
    """
    src = resolve(ref, "scenarios")
    check_top(src.doc, ("scenario",), src.where)
    table = table_of(src.doc, "scenario", src.where)
    where = src.where
    for name in table:
        if name not in _SCENARIO_KEYS:
            raise error(where, f"scenario.{name}",
                        "unknown key; known keys: " + ", ".join(_SCENARIO_KEYS))
    for name in ("model", "system"):
        if name not in table:
            raise error(where, f"scenario.{name}", "missing required key")
    base = src.path.parent if src.path is not None else pathlib.Path.cwd()
    with _referenced(where, "scenario.model", table["model"], src.path, base):
        model = _load_model(table["model"],
                            *_nested(table["model"], where, "scenario.model", base))
    with _referenced(where, "scenario.system", table["system"], src.path, base):
        system = _load_system(table["system"],
                              *_nested(table["system"], where, "scenario.system", base),
                              overrides=overrides)
    batch = tokens = plan = plan_table = None
    sc_stack = None
    if "stack" in table:
        if not isinstance(table["stack"], str):
            raise error(where, "scenario.stack", "must be a stack preset name or a path",
                        table["stack"])
        sc_stack = table["stack"]
        path = base / sc_stack
        if path.suffix.lower() in (".toml", ".json") and not pathlib.Path(sc_stack).is_absolute():
            sc_stack = str(path)
        from cpo_opt.inputs.stacks import load_stack
        with _referenced(where, "scenario.stack", table["stack"], src.path, base):
            load_stack(sc_stack)
    if "global_batch" in table:
        batch = check_value(_SCENARIO_BATCH, table["global_batch"], where, "scenario.global_batch")
    if "tokens" in table:
        tokens = check_value(_SCENARIO_TOKENS, table["tokens"], where, "scenario.tokens")
    if "plan" in table:
        with _referenced(where, "scenario.plan", table["plan"], src.path, base):
            plan, plan_table = _scenario_plan(table["plan"], batch, model, system, where, base,
                                              stack if stack is not None else sc_stack)
    description = src.doc.get("about", {}).get("description", "")
    return Scenario(src.name, description, model, system, plan, batch, tokens, where,
                    sc_stack, plan_table)


@contextlib.contextmanager
def _referenced(where: str, key: str, ref: Any, scenario: pathlib.Path | None,
                base: pathlib.Path):
    """Errors inside a file a scenario refers to name the scenario file and its key first
    (``s.toml: scenario.model: ../m.toml: model.layers: ...``); a scenario cannot refer to
    itself."""
    head = f"{where}: {key}"
    if isinstance(ref, str) and scenario is not None:
        path = pathlib.Path(ref) if pathlib.Path(ref).is_absolute() else base / ref
        try:
            same = path.is_file() and path.resolve() == scenario.resolve()
        except (OSError, ValueError):
            same = False
        if same:
            raise error(where, key, "refers to the scenario file itself; expected a "
                        f"{key.split('.')[1]} file or preset", ref)
    try:
        yield
    except InputError as exc:
        text = str(exc)
        if text.startswith(head) or text.startswith(f"{where}: scenario."):
            raise
        raise InputError(f"{head}: {text}") from None


@contextlib.contextmanager
def _inside(where: str, key: str):
    """An error inside a file that a cases file refers to names the cases file and the case
    first (``c.toml: case[0] 'a': system: /etc/passwd: ...``)."""
    try:
        yield
    except InputError as exc:
        text = str(exc)
        if text.startswith(where.split(": ")[0]) or text.startswith("--set"):
            raise
        raise InputError(f"{where}: {key}: {text}") from None


def _nested(ref: Any, where: str, key: str, base: pathlib.Path) -> tuple:
    """(where, base, context) for a reference inside a scenario file."""
    label = f"{where}: {key}" if isinstance(ref, dict) else None
    if not isinstance(ref, (str, dict)):
        raise error(where, key, "must be a preset name, a path or a table", ref)
    return label, base, f"{where}: {key}"


def _scenario_plan(ref, batch, model, system, where, base, stack=None):
    """``(PlanSpec, raw plan table)`` of a scenario's plan on ``stack``."""
    table, label = _plan_table(ref, *_nested(ref, where, "scenario.plan", base))
    if batch is not None:
        given = table.get("global_batch")
        if given is not None and given != batch:
            raise error(where, "scenario.global_batch",
                        f"differs from the plan's global_batch = {given}", batch)
        table = {**table, "global_batch": batch}
    return plan_from_values(table, model, system, label, stack), dict(table)


def model_dtype(model: ModelSpec) -> str:
    """The dtype a command chooses plans in unless told (``--dtype``): the model's training
    precision (``[model] dtype``, e.g. fp8 for DeepSeek-V3), else bf16."""
    return str(model.values["model"].get("dtype", "bf16"))


def structure_of_plan(model: ModelSpec, plan: PlanSpec) -> Structure:
    """The :class:`Structure` of a loaded model and plan (dtype and attention kernel)."""
    return structure_of(model.model, plan.plan.fp8, plan.plan.flash_attention)
