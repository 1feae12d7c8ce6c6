"""Shared fixtures: float64 JAX for gradient checks, and loaders for presets."""

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(scope="session")
def presets():
    """``presets(model, system, plan=None)`` -> (ModelSpec, SystemSpec, PlanSpec | None)."""
    from cpo_opt.inputs.loaders import load_model, load_plan, load_system

    def load(model, system, plan=None, **overrides):
        m = load_model(model)
        s = load_system(system, overrides={k: str(v) for k, v in overrides.items()} or None)
        return m, s, (load_plan(plan, m, s) if plan is not None else None)

    return load
