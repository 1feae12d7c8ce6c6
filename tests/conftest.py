"""Shared fixtures and the test session's JAX settings.

The test session is an entry point, so it configures JAX the way ``cpo-opt`` does
(:func:`cpo_opt.runtime.setup`): float64 on (gradient checks and searches run in float64) and
the persistent compilation cache on, in ``CPO_OPT_CACHE_DIR`` (default
``~/.cache/cpo-opt/jax``; empty disables it), shared with the CLI, the notebooks and the
subprocess tests. Warm, the suite skips most XLA compilation; a cold cache only costs time.

Tests marked ``slow`` (large searches, calibration fits, the study run, notebooks,
multi-process runs; docs/testing.md lists them and why) are left out of the fast loop
``python -m pytest -m "not slow"``; plain ``python -m pytest`` runs everything.
"""

import os

import jax
import pytest

from cpo_opt import runtime

if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("CPO_OPT_CACHE_DIR") != "":
    # pytest-xdist workers (pyproject.toml's addopts: two) each keep their own compile cache:
    # JAX writes a cache entry in place (no rename, and no lock without a size limit), so one
    # worker could read the other's half-written entry. Subprocesses of a test inherit it.
    os.environ["CPO_OPT_CACHE_DIR"] = os.path.join(runtime.compile_cache_dir(),
                                                   os.environ["PYTEST_XDIST_WORKER"])

runtime.setup(x64=True)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop the in-memory compiled programs after each test module (``jax.clear_caches``).

    The suite compiles thousands of programs in one process (each model structure, row
    shape and static option is its own executable); held until the end, the process grew
    past 10 GB on the 24 GB CI machine, beside subprocesses of 7 GB (``reproduce --quick``).
    A later module that needs a program again loads it from the persistent cache."""
    yield
    release_memory()


def release_memory() -> None:
    """Drop JAX's in-memory executables and hand the freed heap back to the system (glibc
    keeps it mapped otherwise: the process stayed at 11 GB after the search module's 13 GB
    peak). Also called before each documentation block's process starts
    (tests/test_doc_blocks.py): the README's Python block peaked at 12.6 GB beside its
    worker's 9.4 GB, 22.9 GB of the 24 GB machine (round 13)."""
    import ctypes
    import gc
    jax.clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@pytest.fixture(autouse=True)
def _cache_every_compilation():
    """Keep even sub-0.5 s compilations in the persistent cache during tests.

    ``runtime.setup`` (and every in-process ``main(argv)``) keeps only compilations over
    0.5 s. The gradient tests run op by op (eagerly), which compiles hundreds of small
    executables, several seconds in all on a fresh process; cached, the first eager
    gradient takes about 2 s instead of 5.5 s. Set before every test because the in-process
    CLI tests reset the threshold.
    """
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@pytest.fixture(scope="session")
def presets():
    """``presets(model, system, plan=None)`` -> (ModelSpec, SystemSpec, PlanSpec | None)."""
    from cpo_opt.inputs.loaders import load_model, load_plan, load_system

    def load(model, system, plan=None, **overrides):
        m = load_model(model)
        s = load_system(system, overrides={k: str(v) for k, v in overrides.items()} or None)
        return m, s, (load_plan(plan, m, s) if plan is not None else None)

    return load


@pytest.fixture(scope="session")
def experiment():
    """``experiment(name)`` -> the module ``experiments/<name>.py`` (scripts whose numbers the
    docs quote; tests check those numbers through the same functions)."""
    import importlib.util
    from pathlib import Path

    def load(name):
        path = Path(__file__).parent.parent / "experiments" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"experiments_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
