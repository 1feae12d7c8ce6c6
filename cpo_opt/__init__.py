"""cpo-opt: step time, best plan and hardware co-design for LLM/MoE training on two-tier fabrics.

Public surface::

    from cpo_opt import load_model, load_system, load_plan, step_time, evaluate
    m, s = load_model("deepseek-v3"), load_system("gb200-nvl72")
    p = load_plan("tp=1,pp=16,ep=64", m, s)
    step_time(m.model, s.system, p.plan).step_time_s
"""

__version__ = "0.1.0"

from cpo_opt.config import GPU, Fabric, Model, Plan, System
from cpo_opt.evaluate import evaluate
from cpo_opt.inputs import (InputError, load_cases, load_model, load_plan, load_scenario,
                            load_system, plan_from_values)
from cpo_opt.step import StepTime, step_time
from cpo_opt.transformer import flops_per_token, param_counts

__all__ = [
    "__version__", "GPU", "Fabric", "Model", "Plan", "System", "StepTime", "step_time",
    "evaluate", "InputError", "load_model", "load_system", "load_plan", "load_cases",
    "load_scenario", "plan_from_values", "param_counts", "flops_per_token",
]
