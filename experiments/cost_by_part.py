"""Where the time goes: XLA's cost analysis of the exact model, per plan, by model part.

    python experiments/cost_by_part.py [--batch 16384] [--only megatron-1t ...]

The program ``cpo-opt bench`` times (``analysis.bench.evaluator``: ``jit(vmap(step_time))``,
float32, the model traced unbatched data of its static structure, the system a compile-time
constant, the default stack's options, ``batch`` distinct valid plans) is cut into cumulative
prefixes of :func:`cpo_opt.model.step.step_time`, each calling the same library functions in
the same order:

1. ``decode``: lattice columns -> float plan (``lattice.to_plan``);
2. ``dims``: group sizes, placement fill, micro-batches (``dims.dims``);
3. ``compute``: the kernels of every block (``layer_costs.blocks``: GEMMs, attention,
   element-wise, MoE experts);
4. ``fabric``: per-layer communication (``layer_costs.placement``, TP/CP/EP collectives,
   PP send/recv);
5. ``pipeline + DP``: the pipeline layout (first/middle/last rank) and each rank's DP/ZeRO
   traffic (``pipeline.layout``, ``memory.local_params``, ``step._dp_comms``);
6. ``memory``: HBM use (``memory.memory``);
7. ``composition``: the whole ``step_time`` (host issue, overlap and exposure per rank,
   pacing rank, bubble, DP hiding, optimizer, breakdown and derived fields), reduced like
   the prefixes;
8. ``outputs``: the full StepTime returned (what bench runs) instead of one number.

Each prefix returns the sum of all its intermediate leaves (one float per plan: nothing it
computed can be dropped, and its output is as small as the reduced full program's), so the
difference between a prefix and the one before it is the cost of that part; XLA fuses each
program on its own, so a difference can be slightly off (a part can even read as negative
bytes when fusion changes). A last line gives the search scorer (``search.score.score_rows``:
the system traced, option columns, feasibility; plans only) for comparison. Per plan =
XLA's count for the batch / batch: work that does not depend on the plan is done once per
call and is spread over the batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np

from cpo_opt.analysis.bench import sample_plans
from cpo_opt.inputs import schema
from cpo_opt.inputs.loaders import load_model, load_system
from cpo_opt.inputs.stacks import load_stack
from cpo_opt.model import fabric, layer_costs, pipeline, step
from cpo_opt.model.dims import dims
from cpo_opt.model.memory import local_params, memory
from cpo_opt.model.structure import Structure, structure_of
from cpo_opt.search import lattice
from cpo_opt.search.space import search_options

SCENARIOS = [("megatron-1t", "dgx-a100-selene", 3072), ("deepseek-v3", "gb200-nvl72", 15360)]
"""Model, system, and the global batch of the search scorer's plan space (bench_search.py's)."""
PARTS = ["decode", "dims", "compute", "fabric", "pipeline + DP", "memory", "composition",
         "outputs"]


def _leaves(x):
    """Numeric leaves of nested dataclasses / tuples / lists / dicts (not the static
    Structure, whose fields are Python flags)."""
    if isinstance(x, Structure) or x is None or isinstance(x, (str, bool)):
        return
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        for f in dataclasses.fields(x):
            yield from _leaves(getattr(x, f.name))
    elif isinstance(x, dict):
        for v in x.values():
            yield from _leaves(v)
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _leaves(v)
    else:
        yield x


def _sum_leaves(*trees):
    """One number per plan that depends on every leaf (so XLA keeps them all)."""
    total = jnp.zeros((), jnp.float32)
    for leaf in _leaves(trees):
        total = total + jnp.sum(jnp.asarray(leaf).astype(jnp.float32))
    return total


def prefix(k: int, model, system, plan, s):
    """The first ``k`` parts of :func:`step.step_time` (exact model, temperature 0), as it
    calls them, reduced to one number."""
    if k == 1:
        return _sum_leaves(plan)
    d = dims(model, system, plan, 0.0, s)
    if k == 2:
        return _sum_leaves(plan, d)
    att, dense_ffn, moe, head, _ = layer_costs.blocks(model, system, plan, d, False, s, 0.0)
    out = [plan, d, att, dense_ffn, moe, head]
    if k == 3:
        return _sum_leaves(*out)
    pl = layer_costs.placement(system, plan, d, 0.0, False)
    dense_only = s.moe is False
    tp_d = layer_costs.tp_dense_layer(model, system, d, pl)
    tp_m = fabric.NO_COMM if dense_only else layer_costs.tp_moe_layer(model, system, plan, d,
                                                                      pl)
    cp_f = layer_costs.cp_layer(model, system, plan, d, pl, 0.0)
    ep = ((fabric.NO_COMM, fabric.NO_COMM) if dense_only
          else layer_costs.ep_moe_layer(model, system, plan, d, pl, 0.0))
    act_bytes = 2.0 * plan.micro_batch * model.seq_len * model.hidden / (plan.cp * plan.tp)
    p2p = fabric.p2p(act_bytes, fabric.crosses(pl.pp, 0.0), system)
    out += [pl, tp_d, tp_m, cp_f, ep, p2p]
    if k == 4:
        return _sum_leaves(*out)
    dense_k, moe_k = att + dense_ffn, att + moe
    t_layer = dense_k.fwd + dense_k.bwd
    if not dense_only:
        t_layer = t_layer + d.is_moe * (moe_k.fwd + moe_k.bwd - t_layer)
    lay = pipeline.layout(model, plan, d.microbatches, head.fwd + head.bwd, t_layer, s, 0.0)
    held = [local_params(model, plan, d, load) for load in lay.ranks()]
    dp_comms = [step._dp_comms(system, plan, pl, *h, moe=d.is_moe) for h in held]
    out += [lay, held, dp_comms, pipeline.average(model, plan, s)]
    if k == 5:
        return _sum_leaves(*out)
    out.append(memory(model, system, plan, d, lay))
    return _sum_leaves(*out)


def programs(system, structure, fixed):
    """``{part: jit((model, rows) -> per-plan result)}`` for every part."""
    fp8, flash = structure.plan_switches()
    opts = dict(fixed)

    def per_row(fn):
        return jax.jit(lambda model, rows: jax.vmap(
            lambda row: fn(model, lattice.to_plan(row, fp8, flash, fixed=opts)))(rows))

    out = {}
    for k, name in enumerate(PARTS[:6], start=1):
        out[name] = per_row(lambda m, p, k=k: prefix(k, m, system, p, structure))
    out["composition"] = per_row(lambda m, p: _sum_leaves(
        step.step_time(m, system, p, structure=structure)))
    out["outputs"] = per_row(lambda m, p: step.step_time(m, system, p, structure=structure))
    return out


def cost(f, args, batch: int, **static) -> dict[str, float]:
    """XLA's flops, transcendentals and bytes accessed per plan, and the compiled program's
    ``while`` loops. XLA's cost analysis counts a loop's body once, whatever its trip count
    (checked on jax 0.10.2's CPU backend with a fixed and a data-dependent trip count), so a
    part holding loops is undercounted by their trip counts."""
    compiled = f.lower(*args, **static).compile()
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
        ca = ca[0]
    return {"flops": float(ca.get("flops", 0.0)) / batch,
            "transc": float(ca.get("transcendentals", 0.0)) / batch,
            "bytes": float(ca.get("bytes accessed", 0.0)) / batch,
            "loops": float(len(re.findall(r"= [^=]*\bwhile\(", compiled.as_text())))}


def scorer_cost(model_spec, system_spec, global_batch: int, batch: int) -> dict[str, float]:
    """Per-row cost of the search scorer on the first ``batch`` rows of the plan-only space
    at ``global_batch``."""
    from cpo_opt.search import make_space
    from cpo_opt.search import score as S
    from cpo_opt.search.exhaustive import plan_columns
    space = make_space(model_spec, system_spec, global_batch)
    cols = plan_columns(space)
    n = len(cols["tp"])
    idx = np.arange(batch) % n
    rows = {k: jnp.asarray(v[idx]) for k, v in S.columns_for_scoring(cols).items()}
    static = dict(structure=S.structure(space), free=(), fixed=space.fixed)
    return cost(S.score_rows, (space.model.model, space.system.system, rows,
                               jnp.float32(np.inf)), batch, **static)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16384, help="plans per call (bench's CPU "
                                                              "default)")
    ap.add_argument("--only", nargs="+", default=None, metavar="MODEL")
    a = ap.parse_args()
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, float32, batch {a.batch}; "
          "per plan: flop, transcendentals, bytes accessed (part = prefix - previous prefix)")
    fixed = tuple((k, v) for k, v in search_options(load_stack(None))[1] if k != "schedule")
    for model_name, system_name, search_gb in SCENARIOS:
        if a.only and model_name not in a.only:
            continue
        ms, ss = load_model(model_name), load_system(system_name)
        flash = schema.resolve_attention(-1, ss.values["gpu"]["matmul_tflops_bf16"],
                                         "matmul_tflops_fp8" in ss.values["gpu"])
        st = structure_of(ms.model, 0, flash)
        cols = sample_plans(ms, ss, a.batch)
        rows = {k: jnp.asarray(cols[k].astype(np.float32))
                for k in lattice.COLUMNS + ("global_batch",)}
        print(f"\n{model_name} on {system_name}")
        print("| part | flop | transc. | bytes | cumulative flop | cumulative transc. | "
              "cumulative bytes | while loops |\n|---|---|---|---|---|---|---|---|")
        prev = {"flops": 0.0, "transc": 0.0, "bytes": 0.0, "loops": 0.0}
        for name, f in programs(ss.system, st, fixed).items():
            c = cost(f, (ms.model, rows), a.batch)
            dlt = {k: c[k] - prev[k] for k in c}
            print(f"| {name} | {dlt['flops']:.0f} | {dlt['transc']:.0f} | "
                  f"{dlt['bytes']:.0f} | {c['flops']:.0f} | {c['transc']:.0f} | "
                  f"{c['bytes']:.0f} | {c['loops']:.0f} |", flush=True)
            prev = c
        c = scorer_cost(ms, ss, search_gb, a.batch)
        print(f"| search scorer (score_rows, gb {search_gb}) | | | | {c['flops']:.0f} | "
              f"{c['transc']:.0f} | {c['bytes']:.0f} | {c['loops']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
