"""A resolved plan as one line that ``--plan`` (and ``plan=``) accepts back: the same plan.

Every printed plan (``evaluate``, ``optimize``, ``compare``, the study's tables and files)
goes through :func:`plan_line`: the degrees, batch and precision always (``global_batch``
included, so that no command's default batch can replace it), the derived ``dp``, ``edp``
and ``microbatches`` (checked when pasted back, never used), and every other key whose value
the plan, not the software stack, decided: an option the plan or a search set (``from`` =
``"plan"`` / ``"search"`` in the result's ``stack.options``), aligned placement, and a plan
key outside the stack's options whose value is not the schema's default for the plan
(``sequence_parallel``, ``first_stage_layers``, ...). Keys the stack filled are left out:
on the same stack they resolve again to the same values (tests/test_plan_lines.py pastes
lines back and compares the resolved plans). Without the options' provenance every key is
written.
"""

from __future__ import annotations

from typing import Any, Mapping

from cpo_opt.inputs import schema
from cpo_opt.inputs.loaders import PLAN_ARG_ALWAYS
from cpo_opt.inputs.tables import resolve_table

HEAD = ("tp", "pp", "dp", "cp", "ep", "etp", "edp", "vpp", "micro_batch", "microbatches",
        "global_batch", "recompute", "zero", "dtype", "attention")
"""Keys written first, in this order (when the plan has them)."""

DERIVED = ("dp", "edp", "microbatches")


def text(v: Any) -> str:
    """A value as ``--plan`` parses it (booleans lower case)."""
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def schema_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """The schema's default of every plan key for a plan with these degrees (defaults such
    as ``sequence_parallel`` and ``overlap_p2p`` depend on ``tp`` and ``vpp``)."""
    keep = {k: values[k] for k in PLAN_ARG_ALWAYS if k in values}
    return resolve_table("plan", keep, "plan line")


def plan_keys(values: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> list[str]:
    """The keys :func:`plan_line` writes, in order (every key when ``options`` is None)."""
    keys = [k for k in HEAD if k in values]
    rest = [k.name for k in schema.PLAN_KEYS if k.name in values and k.name not in keys]
    if options is None:
        return keys + rest
    defaults = schema_defaults(values)
    for key in rest:
        entry = options.get(key)
        if key == "placement" and values[key] == "aligned":
            keys.append(key)
        elif entry is not None:
            if entry.get("from") in ("plan", "search"):
                keys.append(key)
        elif key not in defaults or defaults[key] != values[key]:
            keys.append(key)
    return keys


def plan_line(values: Mapping[str, Any] | None, options: Mapping[str, Any] | None = None,
              sep: str = " ") -> str:
    """The resolved plan ``values`` (``evaluate --json``'s ``plan``) as ``KEY=VALUE`` pairs
    that resolve back to the same plan on the same stack; ``options`` is the result's
    ``stack.options`` (where each option came from; None: every key is written, which
    resolves to the same plan on any stack). ``"-"`` for no plan."""
    if not values:
        return "-"
    return sep.join(f"{k}={text(values[k])}" for k in plan_keys(values, options))
