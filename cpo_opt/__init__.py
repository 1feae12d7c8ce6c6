"""cpo-opt: step time, best plan and hardware co-design for LLM/MoE training on two-tier fabrics.

Public surface (SPEC section 3): one function per command, each returning a typed result whose
``to_dict()`` is the command's ``--json`` object::

    import cpo_opt
    r = cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", "tp=1,pp=8,ep=64,dtype=fp8")
    best = cpo_opt.optimize("megatron-1t", "dgx-a100-selene", global_batch=3072)
    cpo_opt.sensitivity(...), cpo_opt.validate(...), cpo_opt.reproduce(quick=True)

Many plans in one batched call (``cpo_opt.plans``)::

    batch = cpo_opt.plans.grid("deepseek-v3", "h800-cluster", tp=[1, 2, 4], pp=[4, 8, 16],
                               ep=[16, 32, 64], global_batch=15360)
    r = cpo_opt.evaluate_batch(plans=batch)       # r[i] == cpo_opt.evaluate(..., batch.given[i])
    batch.rejected                                # [(combination, the rule it breaks)]

The traced model underneath::

    from cpo_opt import load_model, load_system, load_plan, step_time
    m, s = load_model("deepseek-v3"), load_system("gb200-nvl72")
    p = load_plan("tp=1,pp=16,ep=64", m, s)
    step_time(m.model, s.system, p.plan).step_time_s   # pure: jit, vmap, grad
    step_time(m, s, p).step_time_s                     # loaded specs: one float64 evaluation

Precision: every function computes in float64 by default, as the command line does
(``precision="float32"`` for speed), for the call only; JAX's global settings are the
caller's (``cpo_opt.runtime.setup()`` sets what ``cpo-opt`` sets, the compile cache included).

Layers (each imports only those before it): ``model`` (pytrees, constants, formulas) <-
``inputs`` (schema, files, checks) <- ``search`` (lattice, exhaustive, gradient) <-
``analysis`` (evaluate, optimize, sensitivity, validate, bench) <- ``study`` <- ``api`` <-
``cli``. ``runtime`` (JAX settings for entry points) stands apart.
"""

__version__ = "0.1.0"

from cpo_opt.api import (BatchResult, CalibrateResult, EvaluateResult, OptimizeResult,
                         ReproduceResult, Result, SensitivityResult, ValidateResult, calibrate,
                         evaluate, evaluate_batch, load_inputs, optimize, reproduce,
                         sensitivity, step_time, validate)
from cpo_opt.api import CompareResult, compare
from cpo_opt.inputs import (ArgumentError, InputError, load_cases, load_model, load_plan,
                            load_scenario, load_system, plan_from_values)
from cpo_opt.model.config import GPU, Fabric, Model, Plan, System
from cpo_opt.model.step import StepTime
from cpo_opt.model.transformer import flops_per_token, param_counts
from cpo_opt import plans, runtime

__all__ = [
    "__version__", "evaluate", "optimize", "sensitivity", "validate", "calibrate", "reproduce",
    "CalibrateResult",
    "load_inputs", "Result", "EvaluateResult", "OptimizeResult", "SensitivityResult",
    "ValidateResult", "ReproduceResult", "GPU", "Fabric", "Model", "Plan", "System",
    "StepTime", "step_time", "InputError", "ArgumentError", "load_model", "load_system",
    "load_plan", "load_cases", "load_scenario", "plan_from_values", "param_counts",
    "flops_per_token", "compare", "CompareResult", "evaluate_batch", "BatchResult", "plans",
    "runtime",
]
