"""The searches: lattice rules, exhaustive ground truth, gradient search, co-design, sharding.

Each scenario's exhaustive ground truth is computed once per module (``truths``) and shared by
every test that compares against it. The Config2/Passage, DeepSeek-V3 and Llama 3 gradient vs
exhaustive cases, the co-design search and the multi-device subprocesses are marked ``slow``.
"""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from cpo_opt.model import fabric_cost
from cpo_opt.search import lattice
from cpo_opt.inputs.loaders import InputError, load_model, load_system, plan_from_values
from cpo_opt.search import exhaustive_search, gradient_search, make_space
from cpo_opt.search import relaxed
from cpo_opt.search import score as S
from cpo_opt.model.step import step_time
from cpo_opt.cli.main import main

# the shipped scenarios, shrunk where needed so the exhaustive ground truth stays fast
SCENARIOS = {
    "megatron-1t-a100": ("megatron-1t", "dgx-a100-selene", None, 3072),
    "deepseek-v3-nvl72": ("deepseek-v3", "gb200-nvl72", {"cluster.gpus": "1152"}, 1152),
    "llama3-405b-h100": ("llama3-405b", "dgx-h100", {"cluster.gpus": "2048"}, 1024),
    # the study case whose optimum (tp 2, pp 1) lies far from where the descent ends (pp 9,
    # vpp 8, cp 2): found only by the two-degree line-search polish
    # (pinned at the earlier Passage preset, 576 GPUs x 800 GB/s, where this case was found)
    "config2-passage": ("config2", "study-passage",
                        {"scale_up.domain_size": "576", "scale_up.bandwidth_GB_s": "800"}, 9216),
}
# slow: millions of plans in the ground truth (config2, deepseek) or another model's
# compilations (llama); megatron-1t-a100 keeps the gradient search in the fast loop
SLOW = {"config2-passage", "deepseek-v3-nvl72", "llama3-405b-h100"}
STARTS, STEPS = 24, 120  # one compilation of the descent for every test


def _space(name, **kw):
    model, system, overrides, gb = SCENARIOS[name]
    return make_space(load_model(model), load_system(system, overrides=overrides), gb, **kw)


@pytest.fixture(scope="module")
def truths():
    """``truths(name)`` -> (space, exhaustive SearchResult), computed once per scenario."""
    cache = {}

    def get(name):
        if name not in cache:
            space = _space(name)
            cache[name] = (space, exhaustive_search(space))
        return cache[name]

    return get


def test_lattice_agrees_with_plan_rules():
    """Every enumerated plan passes the file-level rules, and rule-breaking rows are masked."""
    space = _space("deepseek-v3-nvl72")
    cols = lattice.enumerate_plans(space.model.values, space.system.values, space.global_batch)
    assert len(cols["tp"]) > 10_000
    rng = np.random.default_rng(0)
    for i in rng.choice(len(cols["tp"]), 200, replace=False):
        values = lattice.plan_values(cols, int(i), "bf16", "flash")
        plan_from_values(values, space.model, space.system, where="lattice")  # no InputError
    bad = {k: v[:50].copy() for k, v in cols.items()}
    bad["tp"] = np.full(50, 3)  # 3 does not divide 128 heads
    assert not lattice.valid_mask(bad, space.model.values, space.system.values).any()
    for i in range(3):
        with pytest.raises(InputError):
            plan_from_values(lattice.plan_values(bad, i, "bf16", "flash"), space.model,
                             space.system, where="lattice")


def test_exhaustive_is_the_true_minimum_and_counts_honestly(truths):
    space, res = truths("megatron-1t-a100")
    cols = lattice.enumerate_plans(space.model.values, space.system.values, space.global_batch,
                                   options=space.options, fp8=space.fp8)
    assert res.evaluations == len(cols["tp"])
    # the stack's options are columns: every combination where it applies, once
    assert "pipeline_layout" in cols
    scores = S.score(space, cols)
    # the batched scoring boundary: one float64 value per row in every output
    n = len(cols["tp"])
    chex.assert_shape(list(scores.values()), (n,))
    chex.assert_type(list(scores.values()), np.float64)
    chex.assert_tree_all_finite(scores["raw_step_time_s"])
    assert res.step_time_s == pytest.approx(float(np.min(scores["step_time_s"])), rel=1e-12)
    assert res.search_wall_s > 0 and res.method == "exhaustive"
    assert res.detail["feasible"] == int(np.sum(np.isfinite(scores["step_time_s"])))


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in sorted(SCENARIOS)])
def test_gradient_search_within_one_percent_of_exhaustive(truths, name):
    space, truth = truths(name)
    found = gradient_search(space, starts=STARTS, steps=STEPS, seed=1)
    assert np.isfinite(truth.step_time_s)
    assert found.step_time_s <= truth.step_time_s * 1.01, (found.plan_values, truth.plan_values)
    assert found.step_time_s >= truth.step_time_s * (1 - 1e-12)  # never better than the truth
    d = found.detail
    assert found.evaluations == d["relaxed_evaluations"] + d["exact_evaluations"]
    assert d["relaxed_evaluations"] == STARTS * STEPS
    # the winner is a valid plan that really has that step time
    plan = plan_from_values(found.plan_values, space.model, space.system, where="test")
    r = step_time(space.model.model, space.system.system, plan.plan)
    assert float(r.step_time_s) == pytest.approx(found.step_time_s, rel=1e-9)
    assert float(r.fits_memory) == 1.0


def test_relaxed_objective_equals_exact_at_integer_points_as_temperature_vanishes():
    space = _space("megatron-1t-a100")
    m, s = space.model.model, space.system.system
    z = jnp.log2(jnp.array([8.0, 16.0, 1.0, 1.0, 1.0, 8.0, 1.0]))
    values = {"tp": 8, "pp": 16, "cp": 1, "ep": 1, "etp": 1, "vpp": 8, "micro_batch": 1,
              "global_batch": 3072, "recompute": "selective", "zero": 2,
              "sequence_parallel": True, "attention": "unfused", "overlap_p2p": True}
    exact = float(step_time(m, s, plan_from_values(values, space.model, space.system, "test",
                                                   "megatron-defaults").plan).step_time_s)
    errs = []
    for t in (0.3, 0.05, 0.01, 0.001):
        _, st = relaxed.objective(z, 1.0, 2.0, t, m, s, 3072.0, 0.0, 0.0, np.inf, ())
        errs.append(abs(float(st) / exact - 1))
    assert errs == sorted(errs, reverse=True)
    assert errs[-1] < 1e-3


_OBJECTIVE_JIT = jax.jit(relaxed.objective, static_argnums=(10,))
"""The relaxed objective compiled once (as inside the gradient search's scan): the reference."""


class RelaxedObjectiveJitEager(parameterized.TestCase):
    """The relaxed objective the gradient search descends is the same function compiled and op
    by op (chex variants), with a free hardware field, at a warm temperature."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_jit_equals_eager(self):
        space = _space("megatron-1t-a100")
        m, s = space.model.model, space.system.system
        free = ("scale_up.bandwidth_GB_s",)
        z = jnp.concatenate([jnp.log2(jnp.array([8.0, 16.0, 1.0, 1.0, 1.0, 8.0, 1.0])),
                             jnp.log(jnp.array([600.0]))])  # GB/s

        @self.variant
        def f(z, t, m, s):  # model and system as arguments: traced pytrees, as in the search
            return relaxed.objective(z, 1.0, 2.0, t, m, s, 3072.0, 0.0, 0.0, np.inf, free)

        got = f(z, 0.05, m, s)
        chex.assert_tree_all_finite(got)
        want = _OBJECTIVE_JIT(z, 1.0, 2.0, 0.05, m, s, 3072.0, 0.0, 0.0, np.inf, free)
        chex.assert_trees_all_close(got, want, rtol=1e-10)
        assert float(got[1]) > 0


@pytest.mark.slow
def test_codesign_respects_power_budget_and_limits():
    """Freeing the scale-up bandwidth under a power budget: the winner stays within budget
    and escape bandwidth, and the gradient search matches the exhaustive grid or beats it."""
    model = load_model("deepseek-v3")
    system = load_system("gb200-nvl72", overrides={"cluster.gpus": "1152",
                                                   "scale_up.escape_bandwidth_GB_s": "1800"})
    base_power = float(fabric_cost.interconnect_power_w(system.system))
    free = ("scale_up.bandwidth_GB_s",)
    space = make_space(model, system, 1152, free=free, bounds={free[0]: (100.0, 3600.0)},
                       power_budget_w=1.3 * base_power)
    found = gradient_search(space, starts=STARTS, steps=STEPS, seed=0)
    grid = exhaustive_search(space, grid=9)
    bw = found.hardware[free[0]]
    assert 100.0 <= bw <= 1800.0 * (1 + 1e-9)  # escape bandwidth caps copper
    sys2 = load_system(system.values, overrides={free[0]: str(bw)})
    assert float(fabric_cost.interconnect_power_w(sys2.system)) <= 1.3 * base_power * (1 + 1e-6)
    assert found.step_time_s <= grid.step_time_s * 1.01
    # more bandwidth than the preset was worth buying within the budget, and the hardware
    # polish walks it onto the binding limit (budget or escape cap), not short of it
    assert bw > 900.0
    s = system.system
    per_gpu = 1.3 * base_power / float(s.gpus) / (2.0 * fabric_cost.BITS)
    b_budget = (per_gpu - float(s.scale_out.bandwidth) * float(s.scale_out.energy_j_per_bit)) \
        / float(s.scale_up.energy_j_per_bit) / 1e9
    assert bw >= 0.98 * min(b_budget, 1800.0), (bw, b_budget)


def test_bad_free_field_is_an_input_error():
    with pytest.raises(InputError, match="scale_up.bandwith_GB_s"):
        _space("megatron-1t-a100", free=("scale_up.bandwith_GB_s",))


def test_optimize_cli_json(capsys):
    """The command in-process (``main(argv)``); the real processes (``python -m cpo_opt``, the
    console script) are tested once, in tests/test_sensitivity.py."""
    code = main(["optimize", "--model", "megatron-1t", "--system", "dgx-a100-selene",
                 "--global-batch", "3072", "--exhaustive", "--tokens", "450e9", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    d = json.loads(out.out)
    for key in ("plan", "step_time_s", "evaluations", "search_wall_s", "method", "hardware",
                "result"):
        assert key in d
    assert d["method"] == "exhaustive" and d["result"]["time_to_train_days"] > 0
    assert d["result"]["step_time_s"] == pytest.approx(d["step_time_s"], rel=1e-12)
    code = main(["optimize", "--model", "megatron-1t", "--system", "dgx-a100-selene",
                 "--free", "scale_up.nope"])
    bad = capsys.readouterr()
    assert code == 2 and len(bad.err.strip().splitlines()) == 1
    assert "scale_up.nope" in bad.err and bad.out == ""


SHARD_SCRIPT = r"""
import json, numpy as np, jax
jax.config.update("jax_enable_x64", True)
from cpo_opt.inputs.loaders import load_model, load_system
from cpo_opt.search import lattice
from cpo_opt.search import make_space, score as S
space = make_space(load_model("megatron-1t"), load_system("dgx-a100-selene"), 3072)
cols = lattice.enumerate_plans(space.model.values, space.system.values, 3072)
cols = {k: v[:20001] for k, v in cols.items()}
out = S.score(space, cols, batch=4096)
print(json.dumps({"devices": jax.device_count(), "sum": float(np.sum(out["raw_step_time_s"])),
                  "n": int(out["raw_step_time_s"].size)}))
"""


@pytest.mark.slow
def test_batches_shard_across_devices(tmp_path):
    """The same scores on 1 and on 4 (forced host) devices."""
    results = []
    for n in (1, 4):
        env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
                   CPO_OPT_CACHE_DIR="")
        out = subprocess.run([sys.executable, "-c", SHARD_SCRIPT], capture_output=True,
                             text=True, env=env, timeout=600)
        assert out.returncode == 0, out.stderr
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert [r["devices"] for r in results] == [1, 4]
    assert results[0]["n"] == results[1]["n"] == 20001
    assert results[1]["sum"] == pytest.approx(results[0]["sum"], rel=1e-12)
