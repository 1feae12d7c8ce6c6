"""The batch API (``cpo_opt.plans.grid`` / ``sample`` + ``cpo_opt.evaluate_batch``) against
``cpo_opt.evaluate`` one plan at a time (the independent check: the unbatched, separately
resolved evaluation the command line runs), and the library's precision against the CLI's."""

import json
import math
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import cpo_opt
from cpo_opt.analysis import batch as _batch
from cpo_opt.inputs import ArgumentError, InputError

RTOL = 1e-12


def same(a, b, path=""):
    """Recursive equality, floats to RTOL (relative) or 1e-15 absolute near zero."""
    if isinstance(a, dict):
        assert set(a) == set(b), (path, set(a) ^ set(b))
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-15), (path, a, b)
    else:
        assert a == b, (path, a, b)


def test_grid_keeps_valid_combinations_and_names_the_rule_of_each_rejected_one():
    b = cpo_opt.plans.grid("deepseek-v3", "gb200-nvl72", tp=[1, 2, 3], pp=[1, 4, 8],
                           ep=[16, 64, 96])
    assert len(b) + len(b.rejected) == 27
    assert len(b) > 0 and len(b.rejected) > 0
    for r in b.rejected:                 # evaluate --plan refuses it with the same rule
        with pytest.raises(InputError) as e:
            cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", r.plan)
        assert str(e.value).endswith(r.reason), (str(e.value), r.reason)
        assert r.reason.startswith("plan.")
    assert set(b.reasons()) <= {"plan.tp", "plan.ep", "plan.pp", "plan.global_batch"}
    assert all(g["tp"] != 3 and g["ep"] != 96 for g in b.given)
    assert b.plan.tp.shape == (len(b),)             # a stacked Plan pytree
    assert np.array_equal(b.plan.tp, b.column("tp"))


def test_the_issue_cluster_says_why_no_power_of_two_pp_fits_its_batch():
    """9216 GPUs = 2^10 x 9 with a batch of 15360: dp = 9216 / (tp pp) never divides it."""
    b = cpo_opt.plans.grid("deepseek-v3", "h800-cluster", overrides={"cluster.gpus": 9216},
                           tp=[1, 2], pp=[1, 2, 4, 8, 16], ep=[32, 64], global_batch=15360)
    assert len(b) == 0 and len(b.rejected) == 20
    assert b.reasons() == {"plan.global_batch": 20}
    assert "must be a multiple of micro_batch*dp = 1*9216" in b.rejected[0].reason
    with pytest.raises(ArgumentError, match="no valid plan among 20"):
        cpo_opt.evaluate_batch(plans=b)


def test_evaluate_batch_equals_evaluate_one_by_one():
    b = cpo_opt.plans.grid("deepseek-v3", "gb200-nvl72", tp=[1, 2], pp=[4, 8], ep=[8, 32, 64],
                           micro_batch=[1, 2], dtype=["bf16", "fp8"])
    assert len(b) >= 40
    r = cpo_opt.evaluate_batch(plans=b, tokens=14.8e12)
    assert r.step_time_s.shape == (len(b),) and r.step_time_s.dtype == np.float64
    # both placements of the stack's "auto" policy occur, chosen per plan
    assert {s.values["placement"] for s in b} == {"aligned", "contiguous"}
    for i in range(len(b)):
        one = cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", b.given[i], tokens=14.8e12)
        same(one.to_dict(), r[i].to_dict())
        assert math.isclose(one.step_time_s, r.step_time_s[i], rel_tol=RTOL)
    assert r.best() == int(np.argmin(np.where(r.fits_memory, r.step_time_s, np.inf)))
    d = r.to_dict()
    assert len(d["step_time_s"]) == len(b) and d["plans"][0] == b.values[0]
    json.dumps(d)


def test_a_list_of_plans_and_a_dense_model():
    plans = ["tp=8,pp=8", {"tp": 8, "pp": 16, "vpp": 2}, "megatron-1t-3072"]
    r = cpo_opt.evaluate_batch("megatron-1t", "dgx-a100-selene", plans)
    for i, p in enumerate(plans):
        one = cpo_opt.evaluate("megatron-1t", "dgx-a100-selene", p)
        assert math.isclose(one.step_time_s, r.step_time_s[i], rel_tol=RTOL)
    with pytest.raises(InputError, match=r"^plans\[1\]: plan.tp: must divide model.heads"):
        cpo_opt.evaluate_batch("megatron-1t", "dgx-a100-selene", ["tp=8", "tp=3"])


def test_sample_draws_distinct_valid_plans_from_the_search_space():
    b = cpo_opt.plans.sample("mixtral-8x22b", "dgx-h100", n=64, seed=3)
    assert len(b) == 64 and not b.rejected
    assert len({tuple(sorted(g.items())) for g in b.given}) == 64
    again = cpo_opt.plans.sample("mixtral-8x22b", "dgx-h100", n=64, seed=3)
    assert again.given == b.given
    r = cpo_opt.evaluate_batch(plans=b)
    for i in (0, 17, 63):
        one = cpo_opt.evaluate("mixtral-8x22b", "dgx-h100", b.given[i])
        assert math.isclose(one.step_time_s, r.step_time_s[i], rel_tol=RTOL)


def test_a_batch_evaluated_on_another_system_is_checked_again():
    b = cpo_opt.plans.grid("megatron-1t", "dgx-a100-selene", tp=[4, 8], pp=[8, 16, 32])
    small = cpo_opt.evaluate_batch("megatron-1t", "dgx-a100-selene", b,
                                   overrides={"cluster.gpus": 512})
    assert small.plans is not b and small.plans.system.values["cluster"]["gpus"] == 512
    for i, g in enumerate(small.plans.given):
        one = cpo_opt.evaluate("megatron-1t", "dgx-a100-selene", g,
                               overrides={"cluster.gpus": 512})
        assert math.isclose(one.step_time_s, small.step_time_s[i], rel_tol=RTOL)


def test_one_compilation_serves_any_number_of_plans():
    b = cpo_opt.plans.grid("megatron-1t", "dgx-a100-selene", tp=[4, 8], pp=[8, 16])
    cpo_opt.evaluate_batch(plans=b)
    size = _batch.step_rows._cache_size()
    c = cpo_opt.plans.grid("megatron-1t", "dgx-a100-selene", tp=[2, 4, 8], pp=[4, 8, 16, 32],
                           micro_batch=[1, 2])
    cpo_opt.evaluate_batch(plans=c)
    assert _batch.step_rows._cache_size() == size


def test_bad_choices_name_the_key():
    with pytest.raises(ArgumentError) as e:
        cpo_opt.plans.grid("megatron-1t", "dgx-a100-selene", tq=[1])
    assert e.value.argument == "tq"
    with pytest.raises(ArgumentError) as e:
        cpo_opt.plans.grid("megatron-1t", "dgx-a100-selene", tp=[1, 0])
    assert e.value.argument == "tp"
    with pytest.raises(ArgumentError) as e:
        cpo_opt.plans.grid("megatron-1t", "dgx-a100-selene", recompute=["some"])
    assert e.value.argument == "recompute"


def test_step_time_takes_loaded_specs_and_pytrees():
    m, s = cpo_opt.load_model("deepseek-v3"), cpo_opt.load_system("gb200-nvl72")
    p = cpo_opt.load_plan("tp=1,pp=8,ep=64,dtype=fp8", m, s)
    spec = float(cpo_opt.step_time(m, s, p).step_time_s)
    assert math.isclose(spec, cpo_opt.evaluate(m, s, p).step_time_s, rel_tol=RTOL)
    tree = cpo_opt.step_time(m.model, s.system, p.plan)
    assert math.isclose(float(tree.step_time_s), spec, rel_tol=1e-9)
    v = jax.vmap(lambda tp: cpo_opt.step_time(m.model, s.system, p.plan).step_time_s + 0 * tp)(
        np.ones(2))
    assert v.shape == (2,)


@pytest.mark.slow
def test_a_thousand_user_plans_in_one_call_equal_evaluate():
    b = cpo_opt.plans.grid("deepseek-v3", "gb200-nvl72", tp=[1, 2, 4, 8],
                           pp=[1, 2, 4, 8, 16], vpp=[1, 2], ep=[8, 16, 32, 64],
                           micro_batch=[1, 2], recompute=["selective", "full"], zero=[1, 3],
                           dtype="fp8")
    assert b.rejected and b.reasons() == {"plan.vpp": len(b.rejected)}
    assert len(b) >= 1000
    r = cpo_opt.evaluate_batch(plans=b)
    for i in range(len(b)):
        one = cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", b.given[i])
        assert math.isclose(one.step_time_s, r.step_time_s[i], rel_tol=RTOL), i
        assert one.fits_memory == bool(r.fits_memory[i])
    for rej in b.rejected:
        with pytest.raises(InputError) as e:
            cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", rej.plan)
        assert str(e.value).endswith(rej.reason)


LIBRARY_VS_CLI = textwrap.dedent("""
    import json, sys, jax, cpo_opt
    before = jax.config.jax_enable_x64
    r = cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", "tp=1,pp=8,ep=64,dtype=fp8")
    f32 = cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", "tp=1,pp=8,ep=64,dtype=fp8",
                           precision="float32")
    print(json.dumps({"x64_before": before, "x64_after": jax.config.jax_enable_x64,
                      "result": r.to_dict(), "f32": f32.step_time_s}))
""")


def test_library_and_cli_agree_without_any_setup():
    """A fresh process that never calls cpo_opt.runtime.setup(): float64 results equal to the
    CLI's, JAX's global precision untouched, float32 only when asked."""
    env_cmd = [sys.executable, "-c", LIBRARY_VS_CLI]
    lib = json.loads(subprocess.run(env_cmd, capture_output=True, text=True,
                                    check=True).stdout)
    cli = json.loads(subprocess.run(
        [sys.executable, "-m", "cpo_opt", "evaluate", "--model", "deepseek-v3", "--system",
         "gb200-nvl72", "--plan", "tp=1,pp=8,ep=64,dtype=fp8", "--json"],
        capture_output=True, text=True, check=True).stdout)
    assert lib["x64_before"] is False and lib["x64_after"] is False
    same(lib["result"], cli)
    t = cli["step_time_s"]
    assert abs(lib["f32"] - t) / t < 1e-5 and lib["f32"] != t
