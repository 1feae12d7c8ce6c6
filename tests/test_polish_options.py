"""The gradient search's polish keeps a software option where it still applies and switches
it off where it no longer does, so a degree move is never lost to an option's rule.

Found in round 13 (session 16): in the tiny study's paper figure the polish held plans at
(pp 2, vpp 8, balanced layout) while (pp 1, vpp 1, even layout) was 5.5-8% faster, because
the move (pp 2 -> 1, vpp 8 -> 1) made a one-stage plan with a balanced layout, which the
rules reject, and the valid plan at those degrees was three changes away."""

from __future__ import annotations

import numpy as np

from cpo_opt.inputs import plan_rules
from cpo_opt.inputs.loaders import load_model, load_system
from cpo_opt.search import gradient, lattice
from cpo_opt.search.space import make_space

NAMES = {"dispatcher": {0: "alltoall", 1: "deepep"}, "schedule": {0: "1f1b", 1: "dualpipe"},
         "pipeline_layout": {0: "even", 1: "balanced"}}


def test_codes_are_switched_off_exactly_where_a_plan_file_s_would_be():
    """Random rows of DeepSeek-V3 on the H800 cluster with random option codes: after
    :func:`lattice.without_inapplicable_options`, an option is off where
    :func:`cpo_opt.inputs.plan_rules.applies` (the plan-file path) gives a reason, and keeps
    its code where it applies."""
    model, system = load_model("deepseek-v3"), load_system("h800-cluster")
    mv, sv = model.values, system.values
    gpus = int(sv["cluster"]["gpus"])
    rng = np.random.default_rng(0)
    n = 3000
    cols = {
        "tp": 2 ** rng.integers(0, 3, n), "cp": np.ones(n, dtype=np.int64),
        "pp": rng.choice([1, 2, 4, 8, 16], n), "vpp": rng.integers(1, 5, n),
        "ep": 2 ** rng.integers(0, 7, n), "etp": np.ones(n, dtype=np.int64),
        "micro_batch": 2 ** rng.integers(0, 3, n), "recompute": np.zeros(n, dtype=np.int64),
        "zero": np.ones(n, dtype=np.int64), "global_batch": np.full(n, 4096, dtype=np.int64),
    }
    for k in ("overlap_ep", "dispatcher", "schedule", "pipeline_layout",
              "low_precision_storage"):
        cols[k] = rng.integers(0, 2, n)
    for fp8 in (0, 1):
        out = lattice.without_inapplicable_options(cols, mv, sv, fp8)
        dp = gpus // (cols["tp"] * cols["cp"] * cols["pp"])
        switched = 0
        for i in range(n):
            plan = {k: int(out[k][i]) for k in ("tp", "pp", "vpp", "ep", "micro_batch",
                                                 "global_batch")}
            plan["dtype"] = "fp8" if fp8 else "bf16"
            plan["schedule"] = NAMES["schedule"][int(out["schedule"][i])]
            for k in ("overlap_ep", "dispatcher", "schedule", "pipeline_layout",
                      "low_precision_storage"):
                given = int(cols[k][i])
                value = NAMES[k][given] if k in NAMES else bool(given)
                why = plan_rules.applies(k, {**plan, k: value}, mv, int(dp[i]))
                expect = 0 if (given and why) else given
                assert int(out[k][i]) == expect, (k, plan, given, why)
                switched += given != expect
        assert switched > n // 4  # the rules did switch many codes off
        assert lattice.option_mask(out, mv, sv, dp, np.full(n, gpus), fp8).all()


def test_the_polish_reaches_one_stage_from_a_balanced_interleaved_plan():
    """The paper figure's case: config1 on the 512-GPU Passage pod, the plan (pp 2, vpp 8,
    balanced layout). Its neighbourhood holds (pp 1, vpp 1) with the even layout and every
    other column as before; the same rows without the fix would hold none."""
    space = make_space(load_model("config1"), load_system("paper-fig-passage-512-900"), 256,
                       "fp8")
    assert "pipeline_layout" in space.options
    names = gradient._names(space)
    base = {"tp": 1, "pp": 2, "cp": 2, "ep": 128, "etp": 1, "vpp": 8, "micro_batch": 1,
            "recompute": 0, "zero": 3, "placement": 0, "dispatcher": 1, "pipeline_layout": 1}
    cols = gradient._columns(space, np.asarray([[base[k] for k in names]], dtype=float))
    assert len(cols["tp"]) == 1, "the base plan is valid"
    near = gradient._neighbours(space, cols, 0)
    one = (near["pp"] == 1) & (near["vpp"] == 1)
    assert one.any()
    same = one & (near["pipeline_layout"] == 0) & (near["dispatcher"] == 1) \
        & (near["tp"] == 1) & (near["cp"] == 2) & (near["ep"] == 128)
    assert same.any()
    assert (near["pipeline_layout"][near["pp"] * near["vpp"] < 2] == 0).all()


def test_neighbourhood_exchanges_tp_and_cp_and_collapses_the_pipeline_in_one_move_each():
    """Round 14: the study's config3/copper descent ends at (tp 1, cp 4, pp 2, vpp 8), a
    plan whose one- and two-degree moves held nothing faster; the optimum (tp 4, cp 1, pp 1,
    vpp 1) is four degrees away. Exchanging tp and cp keeps the model-parallel group (and
    dp), and a pipeline collapsed to pp 1 has no vpp to keep: each is one move, so the
    optimum is in the plan's neighbourhood (the gradient search now agrees with the
    exhaustive one there, docs/study-results.md)."""
    space = make_space(load_model("config3"), load_system("study-copper"), 4608, "fp8")
    names = gradient._names(space)
    base = {"tp": 1, "pp": 2, "cp": 4, "ep": 32, "etp": 1, "vpp": 8, "micro_batch": 1,
            "recompute": 0, "zero": 2, "placement": 0, "dispatcher": 1, "pipeline_layout": 0}
    row = [base.get(k, 0) for k in names]
    cols = gradient._columns(space, np.asarray([row], dtype=float))
    assert len(cols["tp"]) == 1, "the base plan is valid"
    near = gradient._neighbours(space, cols, 0)
    target = (near["tp"] == 4) & (near["cp"] == 1) & (near["pp"] == 1) & (near["vpp"] == 1) \
        & (near["ep"] == 32) & (near["micro_batch"] == 1)
    assert target.any()
    # no row keeps vpp > 1 without a pipeline
    assert (near["vpp"][near["pp"] == 1] == 1).all()
