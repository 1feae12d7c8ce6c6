"""Why one config trains faster on one fabric than on the other: the study's use of
:func:`cpo_opt.analysis.explain.explain_pair` (one implementation serves the study and
``cpo-opt compare``), with copper as the baseline and Passage as the candidate."""

from __future__ import annotations

from typing import Any

from cpo_opt.analysis.explain import MENTION, PARTS, PLAN_KEYS, explain_pair, groups, placement
from cpo_opt.inputs.loaders import SystemSpec

__all__ = ["MENTION", "PARTS", "PLAN_KEYS", "explain", "groups", "placement"]


def explain(name: str, copper: dict[str, Any], passage: dict[str, Any],
            systems: dict[str, SystemSpec], same_plan: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """The explanation of one config (see :func:`cpo_opt.analysis.explain.explain_pair`)."""
    return explain_pair(name, copper, passage, systems, same_plan,
                        keys=("copper", "passage"), labels=("copper", "Passage"))
