"""Input files and presets: the schema, file reading, checks, plan rules and the loaders.

Layer 2: imports :mod:`cpo_opt.model` only. Every broken rule raises :class:`InputError`
naming the file, the key and the rule, before anything is traced.
"""

from cpo_opt.inputs.loaders import (ArgumentError, Case, InputError, ModelSpec, PlanSpec, SystemSpec,
                                    list_presets, load_cases, load_model, load_plan,
                                    load_scenario, load_system, plan_from_values,
                                    system_with)

__all__ = ["ArgumentError", "Case", "InputError", "ModelSpec", "PlanSpec", "SystemSpec", "list_presets",
           "load_cases", "load_model", "load_plan", "load_scenario", "load_system",
           "plan_from_values", "system_with"]
