"""The static structure decides which blocks the step-time program builds, never its numbers.

``step_time(..., structure=S)`` with the model's own structure must return what the default
(structure read from concrete values) and :data:`DYNAMIC` (every block built and blended per
row) return: eagerly bit for bit; compiled (``jit`` with the model traced, ``vmap`` rows as
the scorer runs them, stacked, relaxed, gradients) to the last bit or two, because XLA fuses
two different programs differently (multiply-add contraction): the same program compiled
also differs from the eager result by an ulp. ``RTOL`` bounds that.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpo_opt.model.config import replace
from cpo_opt.model.step import step_time
from cpo_opt.model.structure import DYNAMIC, Structure, resolve, structure_of

CASES = {
    # name: (model, system, plan preset, plan overrides)
    "dense": ("megatron-1t", "dgx-a100-selene", "megatron-1t-3072", {}),
    "moe_mla_fp8": ("deepseek-v3", "h800-cluster", "deepseek-v3-2048", {}),
    "moe_mla_bf16_hier": ("deepseek-v3", "gb200-nvl72", "deepseek-v3-2048",
                          {"fp8": 0.0, "dispatcher": 1.0}),
    "moe_gqa": ("mixtral-8x22b", "dgx-h100", "deepseek-v3-2048",
                {"ep": 8.0, "pp": 8.0, "fp8": 0.0}),
    "fp8_dense": ("llama3-405b", "dgx-h100", "llama3-405b-16k", {"fp8": 1.0}),
    "materialized": ("gpt3-175b", "dgx-a100-selene", "gpt3-175b-1536",
                     {"flash_attention": 0.0}),
    "materialized_selective": ("gpt3-175b", "dgx-a100-selene", "gpt3-175b-1536",
                               {"flash_attention": 0.0, "recompute": 1.0}),
}


def _case(presets, name):
    model, system, plan, over = CASES[name]
    m, s, _ = presets(model, system)
    _, _, p = presets(plan.rsplit("-", 1)[0], "h800-cluster" if "deepseek" in plan else system,
                      plan)
    pl = replace(p.plan, **over)
    return m.model, s.system, pl, structure_of(m.model, pl.fp8, pl.flash_attention)


RTOL = 1e-14
"""Compiled programs: a few float64 ulps (measured: at most 1 ulp, in report-only fields)."""


def _same(a, b, rtol=0.0):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if rtol:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=0.0)
        else:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", sorted(CASES))
def test_explicit_structure_changes_no_number_eager(presets, name):
    model, system, plan, st = _case(presets, name)
    assert resolve(None, model, plan) == st  # concrete values: the default is the structure
    base = step_time(model, system, plan)
    _same(base, step_time(model, system, plan, structure=st))
    _same(base, step_time(model, system, plan, structure=DYNAMIC))


@pytest.mark.parametrize("name", [n if n in ("dense", "moe_mla_fp8") else
                                  pytest.param(n, marks=pytest.mark.slow) for n in sorted(CASES)])
def test_explicit_structure_changes_no_number_under_jit_with_model_traced(presets, name):
    """``jit`` traces the model: the default structure is then all-``None`` (every block
    built, blended); the explicit one builds only the model's blocks. Same numbers."""
    model, system, plan, st = _case(presets, name)
    blended = jax.jit(step_time)(model, system, plan)
    pruned = jax.jit(functools.partial(step_time, structure=st))(model, system, plan)
    _same(blended, pruned, RTOL)
    np.testing.assert_array_equal(np.asarray(blended.step_time_s), np.asarray(pruned.step_time_s))


# full suite only: each case compiles its own relaxed, gradient and vmapped programs (3-6 s);
# the fast loop checks the identity eagerly and under jit (tests above)
SLOW_OTHERS = [pytest.param(n, marks=pytest.mark.slow)
               for n in ("dense", "moe_mla_fp8", "materialized")]


@pytest.mark.parametrize("name", SLOW_OTHERS)
def test_explicit_structure_changes_no_number_stacked_relaxed_and_in_gradients(presets, name):
    """The stacked relaxation and its gradient, op by op. Compiled, the same check cost
    150-240 s of XLA compilation per case on the 2-core CI machine (two gradient programs,
    DYNAMIC's with every block; docs/testing.md, round 13): eagerly 2-12 s. That compiled
    programs keep the structure's numbers is the jit and vmapped-rows tests' check."""
    model, system, plan, st = _case(presets, name)

    def f(structure, system):
        return step_time(model, system, plan, 0.05, stacked=True,
                         structure=structure).step_time_s

    v0, g0 = jax.value_and_grad(functools.partial(f, DYNAMIC))(system)
    v1, g1 = jax.value_and_grad(functools.partial(f, st))(system)
    np.testing.assert_allclose(np.asarray(v0), np.asarray(v1), rtol=RTOL)
    # compared as elasticities d step / d ln x, to a few ulps of the step: a block that the
    # blended program builds with weight 0 (the MoE host wait of a dense model) leaves a
    # rounding-noise gradient (1e-27 s per s of host_sync_s, i.e. 1e-32 s) where the pruned
    # program has an exact 0
    for x, a, b in zip(jax.tree.leaves(system), jax.tree.leaves(g0), jax.tree.leaves(g1)):
        np.testing.assert_allclose(np.asarray(a) * np.asarray(x), np.asarray(b) * np.asarray(x),
                                   rtol=RTOL, atol=RTOL * float(v0))


@pytest.mark.parametrize("name", SLOW_OTHERS)
def test_explicit_structure_changes_no_number_vmapped_rows(presets, name):
    """The scorer's shape: model and system traced and unbatched, plan rows batched."""
    model, system, plan, st = _case(presets, name)
    rows = jax.tree.map(lambda x: jnp.asarray([x, x], dtype=jnp.float64), plan)
    rows = replace(rows, micro_batch=jnp.asarray([plan.micro_batch, 2.0 * plan.micro_batch]))

    def run(structure):
        return jax.jit(lambda m, s, r: jax.vmap(
            lambda p: step_time(m, s, p, structure=structure))(r))(model, system, rows)

    _same(run(DYNAMIC), run(st), RTOL)


def test_a_structure_that_contradicts_the_values_is_refused(presets):
    model, system, plan, st = _case(presets, "dense")
    with pytest.raises(ValueError, match="structure.moe"):
        step_time(model, system, plan, structure=Structure(**{**st.__dict__, "moe": True}))
    with pytest.raises(ValueError, match="structure.flash"):
        flipped = Structure(**{**st.__dict__, "flash": not st.flash})
        step_time(model, system, plan, structure=flipped)


@pytest.mark.parametrize("name,most", [("dense", 0.8), ("materialized", 0.8),
                                       ("moe_mla_fp8", 0.95)])
def test_the_structure_prunes_the_program(presets, name, most):
    """Blocks the structure lacks are not in the traced program: fewer equations than the
    all-blocks program, with the model traced (a dense model drops every MoE/MLA block;
    DeepSeek-V3 has nearly all blocks and drops the GQA and materialized-attention ones)."""
    model, system, plan, st = _case(presets, name)

    def eqns(structure):
        jaxpr = jax.make_jaxpr(functools.partial(step_time, structure=structure))(
            model, system, plan)
        return len(jaxpr.eqns)

    assert eqns(st) < most * eqns(DYNAMIC)
