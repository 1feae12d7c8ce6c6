"""The closed-form step time against the event simulator (issue 21, item 1).

    python experiments/sim_check.py [--plans N] [--seed S] [--study] [--worst K]

Samples random valid plans of every shipped model on every shipped system (a seeded numpy
sampler over the plan keys, each plan checked by the same rules as ``cpo-opt evaluate``),
evaluates each with the closed form (:func:`cpo_opt.model.step.step_time`) and the simulator
(:func:`cpo_opt.sim.simulate`), and prints the distribution of ``closed form / simulator - 1``
(median, 5th and 95th percentile, largest magnitude) over all plans, by model family and by
plan feature. ``--study`` adds the study's optima (the copper and Passage optima of
config1-4 in docs/study-results.md, fp8, the study's batch). ``--worst K`` prints the K
largest disagreements with their simulated critical path by kind.

Numbers quoted in docs/simulator.md come from this script; tests/test_sim.py runs its
functions on small samples.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cpo_opt.inputs.loaders import InputError, load_model, load_system  # noqa: E402
from cpo_opt.inputs.loaders import parse_inline_plan, plan_from_values  # noqa: E402
from cpo_opt.model.step import step_time  # noqa: E402
from cpo_opt.sim import simulate  # noqa: E402
from cpo_opt.sim.simulate import SimOptions  # noqa: E402

PRESETS = ROOT / "cpo_opt" / "presets"
MODELS = sorted(p.stem for p in (PRESETS / "models").glob("*.toml"))
SYSTEMS = sorted(p.stem for p in (PRESETS / "systems").glob("*.toml"))
STACK = "megatron-defaults"
"""The software stack plans are resolved on (every option off unless the plan sets it: the
sampler draws the options itself)."""
MAX_TASK_ESTIMATE = 250_000
"""Plans whose graph would exceed about this many tasks are resampled (time, not validity)."""

_CACHE: dict = {}


def specs(model: str, system: str):
    """Loaded (cached) model and system specs."""
    if model not in _CACHE:
        _CACHE[model] = load_model(model)
    if system not in _CACHE:
        _CACHE[system] = load_system(system)
    return _CACHE[model], _CACHE[system]


def family(model) -> str:
    """``dense``, ``moe`` or ``mla`` (MoE with multi-head latent attention)."""
    v = model.values
    if v.get("model.moe") is None:
        return "dense"
    return "mla" if v.get("model.mla") else "moe"


def _pow2(limit: int) -> list[int]:
    out, x = [], 1
    while x <= limit:
        out.append(x)
        x *= 2
    return out


CLEAN = {"pp": 1, "cp": 1, "etp": 1, "overlap_dp": False, "overlap_ep": False,
         "overlap_tp": False, "zero": (0, 1, 2), "recompute": ("none", "selective")}
"""Plans without a pipeline, context parallelism, expert TP, overlapped TP, DP or EP,
ZeRO-3 or full recompute: the mechanisms of the known disagreements (docs/simulator.md) are
absent, so the two should agree to the stated tolerance."""


def sample_plan(rng: np.random.Generator, model, system, restrict=None,
                max_tasks: int = MAX_TASK_ESTIMATE) -> dict | None:
    """One random plan table for ``model`` on ``system`` (None when the draw is invalid;
    the caller draws again). Micro-batch counts are drawn around the pipeline depth (1, 2,
    3, pp - 1, pp, 2 pp, up to 48) so that fill, drain and steady state all occur."""
    mv, sv = model.values, system.values
    m, moe = mv["model"], mv.get("model.moe")
    gpus = int(sv["cluster"]["gpus"])
    layers = int(m["layers"])
    tp = int(rng.choice(_pow2(8)))
    cp = int(rng.choice([1, 1, 2, 4, 8]))
    pp = int(rng.choice([1, 1, 2, 3, 4, 6, 8, 9, 12, 16]))
    fixed = restrict or {}
    tp, cp, pp = (int(fixed.get("tp", tp)), int(fixed.get("cp", cp)), int(fixed.get("pp", pp)))
    if gpus % (tp * cp * pp):
        return None
    dp = gpus // (tp * cp * pp)
    vpp = int(rng.choice([1, 1, 2, 3, 4, 8])) if pp > 1 else 1
    plan: dict = {"tp": tp, "cp": cp, "pp": pp, "vpp": vpp}
    if moe is not None:
        eps = [e for e in _pow2(int(moe["experts"])) if moe["experts"] % e == 0]
        plan["ep"] = int(rng.choice(eps[-5:]))
        plan["etp"] = int(rng.choice([1, 1, 1, 2]))
        plan["overlap_ep"] = bool(rng.random() < 0.5)
        plan["dispatcher"] = str(rng.choice(["alltoall", "deepep"]))
        plan["perfect_balance"] = bool(rng.random() < 0.2)
    mb = int(rng.choice([1, 1, 2]))
    dual = pp % 2 == 0 and vpp == 1 and rng.random() < 0.2
    choices = [1, 2, 3, max(pp - 1, 1), pp, 2 * pp, 3 * pp, 4 * pp, 8, 16, 24, 32, 48]
    nmb = int(rng.choice(choices))
    if dual:
        plan["schedule"] = "dualpipe"
        nmb = max(2 * pp, nmb + nmb % 2)
    if nmb * layers * 40 > max_tasks:
        return None
    plan.update({
        "micro_batch": mb, "global_batch": nmb * mb * dp,
        "recompute": str(rng.choice(["none", "selective", "full"])),
        "zero": int(rng.choice([0, 1, 1, 2, 3])),
        "overlap_tp": bool(rng.random() < 0.5),
        "overlap_dp": bool(rng.random() < 0.8),
        "cuda_graphs": bool(rng.random() < 0.3),
        "placement": str(rng.choice(["contiguous", "aligned"])),
    })
    if pp * vpp > 1 and rng.random() < 0.3:
        plan["pipeline_layout"] = "balanced"
    if vpp > 1:
        plan["overlap_p2p"] = bool(rng.random() < 0.8)
    else:
        plan["overlap_p2p"] = bool(rng.random() < 0.2)
    if "matmul_tflops_fp8" in sv["gpu"] and rng.random() < 0.5:
        plan["dtype"] = "fp8"
    for key, value in (restrict or {}).items():
        if key in ("pp", "cp", "tp") or (key == "etp" and "etp" not in plan):
            continue
        if isinstance(value, tuple):
            if plan.get(key) not in value:
                plan[key] = value[int(rng.integers(len(value)))]
        else:
            plan[key] = value
    return plan


def sample(n: int, seed: int, models=None, systems=None, max_tries: int = 400,
           restrict=None, max_tasks: int = MAX_TASK_ESTIMATE):
    """``n`` random ``(model name, system name, resolved PlanSpec)`` triples, valid under
    the plan rules, reproducible from ``seed``; ``restrict``: plan keys forced to a value
    (or drawn from a tuple of values), e.g. :data:`CLEAN`; ``max_tasks``: redraw plans
    whose graph would be larger (about ``40 m L`` tasks)."""
    rng = np.random.default_rng(seed)
    models = list(models or MODELS)
    systems = list(systems or SYSTEMS)
    out = []
    while len(out) < n:
        mname = str(rng.choice(models))
        sname = str(rng.choice(systems))
        model, system = specs(mname, sname)
        for _ in range(max_tries):
            table = sample_plan(rng, model, system, restrict, max_tasks)
            if table is None:
                continue
            try:
                plan = plan_from_values(table, model, system, "sim_check", STACK)
            except InputError:
                continue
            out.append((mname, sname, plan))
            break
    return out


def features(model, plan, sim) -> dict[str, str]:
    """The plan features the disagreement is broken down by."""
    v = plan.values
    pp, vpp, m = v["pp"], v["vpp"], sim.microbatches
    if v.get("schedule") == "dualpipe":
        sched = "dualpipe"
    elif pp == 1:
        sched = "pp=1"
    else:
        sched = "1f1b" if vpp == 1 else "interleaved"
    layers = int(model.values["model"]["layers"])
    stages = pp * (1 if sched == "dualpipe" else vpp)
    return {
        "family": family(model),
        "schedule": sched,
        "m vs pp": "m<pp" if m < pp else ("m=pp" if m == pp else "m>pp"),
        "layers divide": "even" if layers % stages == 0 else "uneven",
        "overlap_ep": str(bool(v.get("overlap_ep"))) if family(model) != "dense" else "-",
        "overlap_dp": str(bool(v["overlap_dp"])),
        "overlap_p2p": str(bool(v["overlap_p2p"])),
        "overlap_tp": str(bool(v["overlap_tp"])),
        "zero": str(v["zero"]),
        "recompute": v["recompute"],
        "cuda_graphs": str(bool(v.get("cuda_graphs"))),
    }


def compare(mname: str, sname: str, plan, options: SimOptions = SimOptions()) -> dict:
    """Closed form and simulator (run with ``options``) on one plan: ``{"closed", "sim",
    "ratio", "features", "result"}`` (``ratio = closed / sim - 1``)."""
    model, system = specs(mname, sname)
    closed = float(step_time(model.model, system.system, plan.plan).step_time_s)
    res = simulate(model.model, system.system, plan.plan, options=options)
    return {"model": mname, "system": sname, "plan": plan, "closed": closed,
            "sim": res.step_time_s, "ratio": closed / res.step_time_s - 1.0,
            "features": features(model, plan, res), "result": res}


def stats(x) -> dict[str, float]:
    """median, 5th / 95th percentile and largest magnitude of ``x``."""
    a = np.asarray(x, dtype=float)
    return {"n": len(a), "median": float(np.median(a)), "p5": float(np.percentile(a, 5)),
            "p95": float(np.percentile(a, 95)), "max_abs": float(np.max(np.abs(a))),
            "p95_abs": float(np.percentile(np.abs(a), 95))}


def table(rows: list[dict], key: str | None = None) -> list[str]:
    """Lines of the distribution of the ratio, overall or by one feature."""
    groups: dict[str, list[float]] = {}
    for r in rows:
        g = "all" if key is None else r["features"][key]
        groups.setdefault(g, []).append(r["ratio"])
    lines = []
    for g in sorted(groups):
        s = stats(groups[g])
        lines.append(f"| {key or ''} | {g} | {s['n']} | {s['median']:+.2%} | {s['p5']:+.2%} | "
                     f"{s['p95']:+.2%} | {s['p95_abs']:.2%} | {s['max_abs']:.2%} |")
    return lines


STUDY_RESULTS = ROOT / "docs" / "study-results.md"


def study_optima() -> list[tuple[str, str, str]]:
    """``(config, system preset, plan string)`` of the headline optima of
    docs/study-results.md (read from its table, not restated here)."""
    fabrics = {"copper": "study-copper", "passage": "study-passage"}
    out = []
    for line in STUDY_RESULTS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 4 and re.fullmatch(r"config\d", cells[0]) and cells[2] in fabrics \
                and cells[3].startswith("tp="):
            out.append((cells[0], fabrics[cells[2]], cells[3]))
    return out


def study_plan(config: str, system_name: str, text: str):
    """The study optimum as a PlanSpec: its plan line resolved on the study's software stack
    (the line names only what differs from it), fp8, the study's batch."""
    from cpo_opt.study.spec import load_study

    study = load_study("quick")
    model, system = specs(config, system_name)
    table = parse_inline_plan(text.replace(" ", ","), "study-results.md")
    table.pop("dp", None)
    table.pop("edp", None)
    table.pop("microbatches", None)
    table["dtype"] = "fp8"
    table["global_batch"] = study.global_batch(config)
    return plan_from_values(table, model, system, "study-results.md", study.stack.name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--plans", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--study", action="store_true")
    ap.add_argument("--worst", type=int, default=5)
    ap.add_argument("--clean", action="store_true",
                    help="only plans of the CLEAN class (no pipeline, CP or expert TP; "
                         "TP, DP and EP not overlapped; no ZeRO-3, no full recompute)")
    args = ap.parse_args(argv)
    t0 = time.time()
    if args.study:
        print("## Study optima (fp8, the study's batch, its stack and its DP buckets)\n")
        print("| config | fabric | closed form s | simulator s | closed / sim - 1 |")
        print("|---|---|---|---|---|")
        for config, sname, text in study_optima():
            try:
                plan = study_plan(config, sname, text)
            except InputError as e:
                print(f"| {config} | {sname} | - | - | no longer loads: {e} |")
                continue
            r = compare(config, sname, plan)
            print(f"| {config} | {sname} | {r['closed']:.4f} | {r['sim']:.4f} | "
                  f"{r['ratio']:+.2%} |")
        print()
    rows = []
    for mname, sname, plan in sample(args.plans, args.seed,
                                     restrict=CLEAN if args.clean else None):
        rows.append(compare(mname, sname, plan))
    if not rows:  # --plans 0: the study's optima only
        print(f"({time.time() - t0:.0f} s)")
        return 0
    print(f"## {len(rows)} random plans (seed {args.seed}): closed form / simulator - 1\n")
    print("| feature | value | plans | median | p5 | p95 | p95 of abs | max abs |")
    print("|---|---|---|---|---|---|---|---|")
    for line in table(rows):
        print(line)
    for key in rows[0]["features"]:
        for line in table(rows, key):
            print(line)
    worst = sorted(rows, key=lambda r: -abs(r["ratio"]))[:args.worst]
    if worst:
        print("\n## Largest disagreements\n")
    for r in worst:
        print(f"- {r['model']} on {r['system']}: closed {r['closed']:.4f} s, simulated "
              f"{r['sim']:.4f} s ({r['ratio']:+.2%}); plan "
              + ",".join(f"{k}={v}" for k, v in r["plan"].values.items()
                         if k not in ("dp", "edp")))
        print("  critical path: " + ", ".join(
            f"{k} {v * 1e3:.1f} ms" for k, v in list(r["result"].path_totals().items())[:6]))
    print(f"\n({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
