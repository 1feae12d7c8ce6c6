"""Software stacks: what a training run does where its plan does not say.

A *stack* (``--stack NAME|FILE``; presets under ``cpo_opt/presets/stacks/``) holds the default
value of each software option of a plan (dispatcher, overlap switches, CUDA graphs, schedule,
recompute modules, low-precision storage, moment precision, placement policy, pipeline
layout), each with its source, the options a search may choose, and optionally a constants
file (an older, slower stack can carry its own fitted efficiencies)::

    [about]
    description = "..."
    sources = ["..."]

    [stack]
    constants = "my-constants.toml"      # optional, relative to the stack file

    [options]
    dispatcher = { value = "deepep", source = "Megatron-Core v0.15 ..." }
    overlap_ep = { value = true, source = "..." }

    [search]
    choose = ["overlap_ep", "dispatcher", "pipeline_layout", "placement"]

An option's value is checked like the plan key of the same name; ``placement`` also takes
``"auto"`` (the better of aligned and contiguous for the job: what a topology-aware
scheduler does), and the recompute modules (:data:`FIT_OPTIONS`) take ``"fit"``: off where
the plan fits in HBM without them, else the fastest set of them that makes it fit (what a
tuned recipe does when memory is the bottleneck;
:func:`cpo_opt.inputs.loaders.plan_from_values`). A plan key the plan sets wins over the
stack; a stack value that does not apply to a plan (EP overlap of a dense model, DualPipe
with an odd ``pp``, low-precision storage of a bf16 plan) leaves the plan's default (off)
and says why (:func:`cpo_opt.inputs.plan_rules.applies`).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from cpo_opt.inputs import schema
from cpo_opt.inputs.sources import (InputError, check_top, did_you_mean, read_document,
                                    resolve, table_of)
from cpo_opt.inputs.tables import check_value, error

DEFAULT_STACK = "megatron-core-tuned"
"""The stack every command uses unless told otherwise: the sourced state of practice."""

SHIPPED = pathlib.Path(__file__).parent.parent / "presets" / "stacks"
"""The shipped stack presets (the default stack is read from here)."""

OPTIONS = ("dispatcher", "overlap_tp", "overlap_ep", "overlap_dp", "overlap_p2p", "cuda_graphs",
           "schedule", "recompute", "recompute_norm_act", "recompute_mla_up",
           "low_precision_storage", "bf16_moments", "offload_optimizer", "offload_expert_act",
           "attention", "placement", "pipeline_layout", "bf16_main_grads", "fp8_param_gather",
           "ddp_bucket", "fp8_dispatch", "fp8_output_layer", "fp8_recipe")
"""The plan keys a stack may set (software choices, not parallel degrees or batch)."""

FIT_OPTIONS = ("recompute_norm_act", "recompute_mla_up")
"""The options a stack may set to ``"fit"``: Megatron-Core's selective recompute modules
(``--recompute-modules layernorm moe_act`` / ``mla_up_proj``), which Megatron-Core's MoE
README (core_v0.19.0, 'Memory Bottleneck') names as the first, low-overhead remedy when a
plan does not fit. A search holds a ``"fit"`` module off (its plans are those that fit
without it)."""

FIT = "fit"
"""The value of a :data:`FIT_OPTIONS` option that turns it on only when the plan needs it."""

SEARCHABLE = ("overlap_ep", "dispatcher", "cuda_graphs", "schedule", "low_precision_storage",
              "pipeline_layout", "placement")
"""The options a stack may let a search choose (``[search] choose``)."""

_STACK_KEYS = ("constants",)
_OPTION_KEYS = ("value", "source")


@dataclasses.dataclass(frozen=True)
class StackSpec:
    """A checked software stack.

    Attributes:
      name: the preset name or file stem.
      origin: where it came from (messages).
      description: the ``[about]`` description.
      options: ``{key: value}`` in file units (strings for enums, bools, ints).
      sources: ``{key: source text}`` for the options that name one.
      choose: the options a search may choose.
      constants: the constants file the stack names (a path), or None.
    """

    name: str
    origin: str
    description: str
    options: dict
    sources: dict
    choose: tuple[str, ...]
    constants: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stack as JSON: name, description, options with sources, what a search may
        choose, the constants file."""
        return {"name": self.name, "origin": self.origin, "description": self.description,
                "options": {k: {"value": v, "source": self.sources.get(k, "")}
                            for k, v in self.options.items()},
                "choose": list(self.choose), "constants": self.constants}


def _option_key(name: str, where: str) -> schema.Key:
    if name not in OPTIONS:
        raise error(where, f"options.{name}", "not a software option of a stack; options: "
                    + ", ".join(OPTIONS) + did_you_mean(name, list(OPTIONS)))
    if name == "placement":
        return schema.PLACEMENT_POLICY_KEY
    return schema.key_named("plan", name)


def stack_from_doc(doc: Any, where: str, name: str,
                   base: pathlib.Path | None = None) -> StackSpec:
    """A stack from a parsed document (see the module docstring)."""
    if not isinstance(doc, dict):
        raise InputError(f"{where}: a stack must be a table")
    check_top({k: v for k, v in doc.items() if k not in ("stack", "search")},
              ("options",), where)
    about = doc.get("about", {})
    stack = table_of(doc, "stack", where) if "stack" in doc else {}
    for key in stack:
        if key not in _STACK_KEYS:
            raise error(where, f"stack.{key}", "unknown key; known keys: "
                        + ", ".join(_STACK_KEYS))
    constants = stack.get("constants")
    if constants is not None:
        if not isinstance(constants, str) or not constants.strip():
            raise error(where, "stack.constants", "must be the path of a constants file",
                        constants)
        path = pathlib.Path(constants)
        if base is not None and not path.is_absolute():
            path = base / path
        constants = str(path)
    options, sources = {}, {}
    table = table_of(doc, "options", where)
    for opt, entry in table.items():
        key = _option_key(opt, where)
        if isinstance(entry, dict):
            for k in entry:
                if k not in _OPTION_KEYS:
                    raise error(where, f"options.{opt}.{k}", "unknown key; known keys: "
                                + ", ".join(_OPTION_KEYS))
            if "value" not in entry:
                raise error(where, f"options.{opt}.value", "missing required key")
            value = entry["value"]
            if "source" in entry:
                if not isinstance(entry["source"], str):
                    raise error(where, f"options.{opt}.source", "must be a string",
                                entry["source"])
                sources[opt] = entry["source"]
        else:
            value = entry
        if opt in FIT_OPTIONS and value == FIT:
            options[opt] = FIT
            continue
        if opt in FIT_OPTIONS and not isinstance(value, bool):
            raise error(where, f"options.{opt}", "must be true, false or 'fit'", value)
        options[opt] = check_value(key, value, where, f"options.{opt}")
    search = doc.get("search", {})
    if not isinstance(search, dict):
        raise error(where, "search", "must be a table", search)
    for k in search:
        if k != "choose":
            raise error(where, f"search.{k}", "unknown key; known keys: choose")
    choose = search.get("choose", [])
    if not isinstance(choose, list) or not all(isinstance(c, str) for c in choose):
        raise error(where, "search.choose", "must be a list of option names", choose)
    for c in choose:
        if c not in SEARCHABLE:
            raise error(where, "search.choose", "options a search may choose: "
                        + ", ".join(SEARCHABLE) + did_you_mean(c, list(SEARCHABLE)), c)
    if len(set(choose)) != len(choose):
        raise error(where, "search.choose", "lists an option twice", choose)
    return StackSpec(name, where, about.get("description", ""), options, sources,
                     tuple(choose), constants)


def load_stack(ref: Any = None, where: str | None = None,
               base: pathlib.Path | None = None, context: str | None = None) -> StackSpec:
    """A stack from a preset name, a file or a dict; ``None``: :data:`DEFAULT_STACK`."""
    if isinstance(ref, StackSpec):
        return ref
    if ref is None:  # the shipped default, wherever the presets folder points
        path = SHIPPED / f"{DEFAULT_STACK}.toml"
        return stack_from_doc(read_document(path, f"stack preset '{DEFAULT_STACK}'"),
                              f"stack preset '{DEFAULT_STACK}'", DEFAULT_STACK, SHIPPED)
    src = resolve(ref, "stacks", where, base, context)
    folder = src.path.parent if src.path is not None else base
    return stack_from_doc(src.doc, src.where, src.name, folder)
