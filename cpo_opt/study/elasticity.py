"""Which hardware knob moves time to train most, at each config's optimal plan.

``elasticities(study, config, fabric, optimum)`` runs :func:`cpo_opt.analysis.sensitivity.sensitivity`
(reverse-mode autodiff of the exact model) at the optimum's plan and reads the elasticities of
time to train,

    e_x = d log(days) / d log(x) = (d days / d x) (x / days),

for every continuous system field ``x`` (file units). ``e_x = -0.3`` means 1% more of ``x``
shortens training by about 0.3%. ``cluster.gpus`` is listed but not a hardware knob of the
study (the cluster is fixed), so ``most_important`` ranks the other fields. The plan is held fixed (a local derivative; re-optimizing
the plan can only help further, so ``|e|`` is a lower bound on what a change buys).
"""

from __future__ import annotations

from typing import Any

from cpo_opt.inputs.loaders import plan_from_values
from cpo_opt.analysis.sensitivity import sensitivity
from cpo_opt.study.spec import Study

NOT_KNOBS = ("cluster.gpus",)


def elasticities(study: Study, config: str, fabric: str, optimum: dict[str, Any],
                 top: int = 5) -> dict[str, Any]:
    """Elasticities of time to train at one optimum, ranked by magnitude."""
    model, system = study.models[config], study.fabrics[fabric]
    plan = plan_from_values(optimum["plan"], model, system, f"{config} on {fabric}",
                            study.stack)
    s = sensitivity(model, system, plan, study.tokens)
    ttt = s["time_to_train"]
    e = ttt["elasticities"]
    ranked = sorted(e, key=lambda k: -abs(e[k]))
    rows = [{"config": config, "fabric": fabric, "field": k, "value": s["values"][k],
             "elasticity": e[k], "gradient_days_per_unit": ttt["gradients_days"][k],
             "unit": s["units"][k].removeprefix("s per ")} for k in ranked]
    knobs = [k for k in ranked if k not in NOT_KNOBS]
    return {"config": config, "fabric": fabric, "days": ttt["days"],
            "top": rows[:top], "all": rows, "most_important": knobs[0],
            "most_important_elasticity": e[knobs[0]]}


def summary_text(entries: list[dict[str, Any]]) -> list[str]:
    """One sentence per (config, fabric): the top knobs with their elasticities."""
    out = []
    for e in entries:
        top = ", ".join(f"{r['field']} {r['elasticity']:+.3f}" for r in e["top"])
        out.append(f"{e['config']} on {e['fabric']}: {top} (most important hardware knob: "
                   f"{e['most_important']} {e['most_important_elasticity']:+.3f}).")
    return out
