"""What a first (and every) run compiles: host-side plan enumeration compiles nothing per
shape, and the study's uncertainty corners share one compiled program (issue 23: XLA
compilations of eager JAX ops on every new array shape made ``reproduce --quick`` spend about
470 s compiling, cold or warm, on a 2-core machine)."""

import types

import jax
import jax.monitoring
import numpy as np
import pytest

from cpo_opt.model import fabric
from cpo_opt.search import lattice

COMPILE = "/jax/core/compile/backend_compile_duration"


class Compilations:
    """Counts XLA compilations (cache hits included) while the body runs."""

    def __enter__(self):
        self.n = 0
        jax.monitoring.register_event_duration_secs_listener(self._on)
        return self

    def _on(self, event, duration, **kw):
        if event == COMPILE:
            self.n += 1

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._on)
        return False


@pytest.mark.parametrize("gpus,domain", [(9216, 72), (2048, 8), (18432, 144), (1000, 72),
                                         (512, 512)])
def test_working_gpus_is_the_model_s_fill_row_by_row(gpus, domain):
    rng = np.random.default_rng(gpus)
    n = 3000
    cols = {k: 2 ** rng.integers(0, 7, n) for k in ("tp", "cp", "ep", "etp")}
    cols["placement"] = rng.integers(0, 2, n)
    got = lattice.working_gpus(cols, {"cluster": {"gpus": gpus},
                                      "scale_up": {"domain_size": domain}})
    system = types.SimpleNamespace(gpus=float(gpus), scale_up=types.SimpleNamespace(
        domain_size=float(domain)))
    plans = types.SimpleNamespace(**{k: np.asarray(cols[k], float) for k in cols})
    want = np.rint(np.asarray(fabric.fill(system, plans).world)).astype(np.int64)
    assert np.array_equal(got, want)


def test_enumerating_plans_of_new_sizes_compiles_nothing():
    sv = {"cluster": {"gpus": 9216}, "scale_up": {"domain_size": 72}}
    from cpo_opt.inputs import load_model
    m = load_model("deepseek-v3").values
    lattice.enumerate_plans(m, sv, 9216, options={"placement": (0, 1)})   # warm the scalars
    with Compilations() as c:
        for gb in (4608, 9216 * 3, 9216 * 5):
            cols = lattice.enumerate_plans(m, sv, gb, options={"placement": (0, 1)})
            lattice.valid_mask(cols, m, sv)
    assert c.n == 0


@pytest.mark.slow
def test_study_corner_times_compile_once_per_structure():
    from cpo_opt.analysis.evaluate import structure_of_plan
    from cpo_opt.inputs import load_model, load_plan, load_system
    from cpo_opt.study import uncertainty
    sys_ = load_system("study-copper")
    base = sys_.system.constants
    batch = uncertainty.corners(base, uncertainty.ranges_for(sys_.gpu_name, base))
    runs = []
    for name in ("config1", "config2", "config3"):
        m = load_model(name)
        runs.append((m, load_plan("tp=1,cp=2,pp=4,ep=128", m, sys_)))
    structures = {structure_of_plan(m, p) for m, p in runs}
    with Compilations() as c:
        times = [uncertainty._step_times(m, sys_, p, batch) for m, p in runs]
    assert c.n == len(structures) < 3
    assert all(t.shape == times[0].shape and np.all(np.isfinite(t)) for t in times)


def test_calibrate_hessian_by_differences_equals_jax_hessian_of_the_loss():
    """``calibrate``'s Hessian (central differences of the exact gradient built from the
    compiled Jacobian: no program of its own) against ``jax.hessian`` of the same loss, on
    a model small enough to compile at once: log predictions ``log(A exp(theta) + b)``."""
    import jax.numpy as jnp
    from cpo_opt.analysis import calibrate as cal
    rng = np.random.default_rng(1)
    n, G, F = 7, 2, 3
    A = rng.uniform(0.1, 1.0, (n, G * F))
    b = rng.uniform(0.5, 1.5, n)

    def log_pred(theta):
        return jnp.log(A @ jnp.exp(theta.reshape(-1)) + b)

    class Fns:
        @staticmethod
        def predict_and_jacobian(theta):
            return log_pred(theta), jax.jacfwd(log_pred)(theta)

    theta = rng.normal(0, 0.5, (G, F))
    theta0 = rng.normal(0, 0.5, (G, F))
    w = rng.integers(0, 2, n).astype(float) + 0.5
    y = np.asarray(log_pred(theta)) + rng.normal(0, 0.1, n)
    pw = 0.01

    def loss(t):
        r = log_pred(t.reshape(G, F)) - y
        return jnp.sum(w * r * r) / jnp.sum(w) + pw * jnp.sum((t.reshape(G, F) - theta0) ** 2)

    with jax.enable_x64(True):
        want = np.asarray(jax.hessian(loss)(jnp.asarray(theta.reshape(-1))))
        got = cal.hessian_of_loss(Fns, theta, w, y, theta0, pw)
        grad = cal.loss_gradient(Fns, theta, w, y, theta0, pw)
        assert np.allclose(grad.reshape(-1), np.asarray(jax.grad(loss)(
            jnp.asarray(theta.reshape(-1)))), rtol=1e-12, atol=1e-14)
    assert np.allclose(got, want, rtol=1e-7, atol=1e-9)
