"""Tests of cpo_opt.search.brief_jit: the compile options of the gradient programs change how
XLA compiles them, never what they compute."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpo_opt.inputs.loaders import load_model, load_plan, load_system, structure_of_plan
from cpo_opt.model.step import step_time
from cpo_opt.search import brief_jit as B


def test_the_cpu_compiler_takes_the_options():
    """This jaxlib's CPU compiler accepts the option (else the module silently does
    nothing here, and the measured halving of compile time and memory is gone)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the options are the CPU compiler's")
    assert B.options("cpu") == B.OPTIONS["cpu"]


def test_an_option_the_compiler_does_not_know_falls_back_to_the_defaults(monkeypatch):
    monkeypatch.setitem(B.OPTIONS, "cpu", {"xla_no_such_option_anywhere": True})
    monkeypatch.setattr(B, "_ACCEPTED", {})
    if jax.default_backend() != "cpu":
        pytest.skip("the options are the CPU compiler's")
    assert B.options("cpu") is None
    f = B.brief_jit(lambda x: 2.0 * x)
    assert float(f(3.0)) == 6.0


def test_static_argnames_and_wraps():
    @B.brief_jit(static_argnames="k")
    def f(x, k=2):
        """doc"""
        return x ** k
    assert f.__doc__ == "doc"
    assert float(f(3.0, k=3)) == 27.0
    assert float(f(3.0)) == 9.0


def test_a_reverse_mode_program_computes_what_plain_jit_computes():
    """The gradient of the exact step time (DeepSeek-V3 on GB200, DeepSeek's published plan
    shape) with respect to every system leaf: the brief program and ``jax.jit`` with XLA's
    defaults agree to rounding (1e-12 relative; the kernels differ, so the last bits may).
    Both are compiled here, so this checks the option, not a stored number."""
    m, s = load_model("deepseek-v3"), load_system("gb200-nvl72")
    p = load_plan("tp=1,pp=8,ep=64,micro_batch=1,global_batch=9216", m, s)
    st = structure_of_plan(m, p)

    def f(system):
        return step_time(m.model, system, p.plan, structure=st).step_time_s

    g_plain = jax.jit(jax.value_and_grad(f))(s.system)
    g_brief = B.brief_jit(jax.value_and_grad(f))(s.system)
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_brief)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-12, atol=0.0)
    assert np.isfinite(float(g_plain[0])) and float(g_plain[0]) > 0
    assert any(float(jnp.abs(x)) > 0 for x in jax.tree.leaves(g_plain[1])
               if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating))
