"""``calibrate``: fit the model's efficiency constants to measured runs, with intervals.

Model. Case ``i`` (measured step time ``y_i``) is predicted by the exact jitted model that
``evaluate`` runs (:func:`cpo_opt.analysis.evaluate.step_time_jit`), all cases stacked into one
pytree and run under one ``vmap``. Its constants are the shipped ones (or ``base``) except the
fitted ones, which take the value of the case's *level*: its GPU generation
(:func:`cpo_opt.model.constants.generation_of`; the GPU name when it has none). A constant of
level ``g`` is thus identified only by the cases of ``g``.

Parameterisation. Each fitted constant lives in an unbounded coordinate ``theta``: the logit of
a fraction of peak (so it stays in (0, 1)), the log of any other positive quantity (a time
stays > 0). ``theta0`` is the shipped (prior) value.

Loss. With ``r_i = log(pred_i) - log(y_i)`` and weights ``w_i`` (1, or 0 for a held-out case)::

    L(theta) = sum_i w_i r_i^2 / sum_i w_i  +  prior_weight * sum_j (theta_j - theta0_j)^2

a mean squared log error (a relative error, so a 90 s step and a 1 s step count alike) plus a
weak Gaussian prior toward the shipped values, so that a few cases cannot drag a constant into
nonsense. It is minimised by Adam (optax) from ``theta0``; the whole descent is one
``lax.scan`` and the full fit plus the ``N`` leave-one-out fits run as one ``vmap`` over weight
vectors: one compilation, one call.

Identifiability. At ``theta0`` the Gauss-Newton information of the data, ``(2/N) J^T J`` with
``J = d log(pred) / d theta``, is compared with the prior's, ``2 prior_weight I``: a constant
whose posterior variance would be more than half its prior variance (the data carry less
information on it than the weak prior, e.g. ``gemm_eff_fp8`` without fp8 cases, or a constant
step time does not depend on) is reported in ``unconstrained`` and left at its prior value.

Intervals (Laplace approximation). ``L`` is ``2 sigma^2 / N`` times the negative log posterior
of the model ``log y_i ~ Normal(log pred_i, sigma^2)`` with prior ``theta ~ Normal(theta0,
sigma^2 / (N prior_weight))``, so the posterior covariance at the optimum is
``cov = (2 sigma^2 / N) H^-1`` with ``H`` the Hessian of ``L`` (central differences of its exact
gradient, :func:`hessian_of_loss`: cheap, a few parameters) and
``sigma^2`` estimated from the residuals, ``sum r^2 / (N - p)``, floored at ``noise_floor^2``.
The 90% interval is ``theta +- 1.645 sd`` mapped back through the sigmoid/exp, so it stays
physical and is asymmetric in the constant's units. Why Laplace rather than a bootstrap over
cases: the loss is smooth, its Hessian comes from the exact gradient, and with 10-20 cases a
bootstrap resample often drops every case that identifies a constant (all fp8 runs, say),
giving degenerate refits. The leave-one-out fits below are the honest out-of-sample check.

Cross-validation. Each case is predicted by constants fitted without it (leave-one-out), from
the same ``theta0`` and with the same constrained set. Its residuals ``r_i`` (log) give the
model-form term of :mod:`cpo_opt.analysis.uncertainty`: ``rms_log_error = sqrt(mean r_i^2)``
and ``within_level_correlation`` ``= mean_{i != j, same level} r_i r_j / mean r_i^2`` (clipped
to [0, 1]; 0 without pairs), written to a constants file's ``about.model_form``; the Laplace
correlations of each level's constrained constants go to ``about.correlation``.

Transfer (``transfer="hopper:blackwell"``, ``calibrate --transfer``). Constants are per GPU
generation, so a fit to one generation's runs says nothing about another's. What does carry
is the *shift* a user's runs ask for relative to the shipped constants (their software is
slower or faster than the shipped fit's in the same way on every GPU): only the cases of the
source generation are fitted (the others are held out), and each constrained constant's shift
in its unbounded coordinate, ``delta_j = theta_j - theta0_j`` (source level), is applied to
the target generation's shipped value, ``theta_target_j = theta0_target_j + delta_j``. The
transferred interval is wider: ``sd_target^2 = sd_j^2 + delta_j^2`` (the fit's posterior plus a
transfer term as large as the shift itself: whether the shift carries at all is the unknown,
so the target's interval spans both the shipped and the shifted value). Held-out cases of the
target generation are reported before (shipped) and after the transfer.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cpo_opt.analysis.coordinates import Z90, from_theta, to_theta
from cpo_opt.analysis.evaluate import step_time_jit
from cpo_opt.model.structure import structure_of_cases
from cpo_opt.search.brief_jit import brief_jit
from cpo_opt.inputs.constants_file import RANGES, ConstantsTable, as_table, for_gpu
from cpo_opt.inputs.loaders import ArgumentError, Case, InputError, load_cases
from cpo_opt.model.constants import GENERATIONS, INFO, constants_for, generation_of

DEFAULT_PRIOR_WEIGHT = 1e-3
"""Weight of the prior term: with ~10% residuals (r^2 ~ 1e-2) moving a constant by one unit of
``theta`` (a logit or a factor e) costs a tenth of the data misfit: a weak pull."""

DEFAULT_STEPS = 400
MAX_STEPS = 10_000
"""Most Adam steps a fit takes (25x the default; the descent converges in a few hundred): the
whole descent is one compiled scan, so a larger count only makes the run longer."""

MAX_CASES = 256
"""Most cases one calibration fits: the fit and its leave-one-out refits evaluate
``(n + 1) x n`` cases per step in one vmapped call, so memory and time grow as ``n^2``
(256 cases: 66k evaluations per step). The shipped sets hold 36."""
DEFAULT_LEARNING_RATE = 0.05
DEFAULT_NOISE_FLOOR = 0.01
"""Smallest residual scale (1%) used for intervals: measured step times do not repeat better."""

IDENTIFIED_RATIO = 0.5
"""A constant is constrained when its posterior variance is below this fraction of its prior
variance (at ``theta0``, Gauss-Newton)."""


def level_of(gpu_name: str) -> str:
    """The level a case's fitted constants belong to: its GPU generation, else its GPU name."""
    return generation_of(gpu_name) or str(gpu_name)


NOT_BY_DEFAULT = ("clock_fraction", "sm_count", "gemm_tile_overhead_s", "a2a_peer_s")
"""Constants fitted only when asked for (``--fit NAME``): the sustained clock fraction
multiplies every tensor-core rate, so on runs of one dtype it is collinear with that dtype's
GEMM fraction and neither would be identified; the SM count is a datasheet count, not an
efficiency (a step-time fit pushed A100's 108 to ~677); the per-tile GEMM overhead is fitted
to the published GEMM tables and the all-to-all per-peer cost sourced from DeepEP/NCCL
measurements (:mod:`cpo_opt.model.constants`), not to training steps."""


def default_fit() -> tuple[str, ...]:
    """Every constant the model has (:data:`INFO`) but :data:`NOT_BY_DEFAULT`; those step
    time does not depend on are reported unconstrained."""
    return tuple(n for n in INFO if n not in NOT_BY_DEFAULT)


# --------------------------------------------------------------------------- parameterisation
# --------------------------------------------------------------------------- the batch
@dataclasses.dataclass(frozen=True, eq=False)
class Batch:
    """Cases stacked into one pytree batch (``data``: model, system, plan and level index
    ``idx``) with their ids, levels and log measured step times ``y``.

    The case data enter the compiled functions as constants (XLA folds everything that does
    not depend on the fitted constants, which makes the derivatives an order of magnitude
    cheaper to compile than with the data as arguments); :meth:`functions` compiles them once
    per batch and set of fitted names."""

    ids: tuple[str, ...]
    levels: tuple[str, ...]
    data: dict
    y: np.ndarray
    _compiled: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def level_index(self) -> np.ndarray:
        return np.asarray(self.data["idx"])

    def functions(self, fit: tuple[str, ...]) -> "Functions":
        if fit not in self._compiled:
            self._compiled[fit] = Functions(self.data, fit)
        return self._compiled[fit]


def _stack(trees):
    return jax.tree.map(lambda *xs: np.asarray(xs, dtype=float), *trees)


_BATCHES: dict = {}
"""Recent batches by content (ids, levels, a hash of the stacked case data), so repeated
calibrations of the same cases share one compilation."""


def make_batch(cases: Sequence[Case], base: ConstantsTable | None = None,
               fitted: bool = True) -> Batch:
    """Stack ``cases`` (each system's constants from ``base`` when given; without ``fitted``
    from the physical defaults, leaving out the shipped fitted values)."""
    levels: list[str] = []
    index = []
    systems = []
    for c in cases:
        lvl = level_of(c.system.gpu_name)
        if lvl not in levels:
            levels.append(lvl)
        index.append(levels.index(lvl))
        s = c.system.system
        if base is not None or not fitted:
            table = for_gpu(base, c.system.gpu_name)  # set aside where it does not cover
            s = dataclasses.replace(s, constants=constants_for(c.system.gpu_name, table,
                                                               fitted=fitted))
        systems.append(s)
    data = {"model": _stack([c.model.model for c in cases]), "system": _stack(systems),
            "plan": _stack([c.plan.plan for c in cases]),
            "idx": np.asarray(index, dtype=np.int32)}
    ids = tuple(c.id for c in cases)
    key = (ids, tuple(levels), hashlib.sha256(b"".join(
        np.ascontiguousarray(x).tobytes() for x in jax.tree.leaves(data))).hexdigest())
    y = np.log(np.asarray([c.measured_step_time_s for c in cases], dtype=float))
    if key not in _BATCHES:
        if len(_BATCHES) >= 4:
            _BATCHES.pop(next(iter(_BATCHES)))
        _BATCHES[key] = Batch(ids, tuple(levels), data, y)
    return dataclasses.replace(_BATCHES[key], y=y)


def prior_theta(batch: Batch, fit: Sequence[str]) -> np.ndarray:
    """``theta0[level, constant]``: the base value of each constant for each level (taken from
    the level's first case)."""
    out = np.zeros((len(batch.levels), len(fit)))
    consts = batch.data["system"].constants
    for g in range(len(batch.levels)):
        i = int(np.argmax(batch.level_index == g))
        for j, name in enumerate(fit):
            out[g, j] = float(to_theta(name, np.asarray(getattr(consts, name))[i]))
    return out


def log_predictions(theta, data: dict, fit: Sequence[str]):
    """log step time of every case with the fitted constants at ``theta[level, constant]``."""
    per_case = theta[data["idx"]]
    s = data["system"]
    values = {name: from_theta(name, per_case[:, j]) for j, name in enumerate(fit)}
    system = dataclasses.replace(s, constants=dataclasses.replace(s.constants, **values))
    structure = structure_of_cases(data["model"], data["plan"])  # static: host values
    r = jax.vmap(functools.partial(step_time_jit, structure=structure))(
        data["model"], system, data["plan"])
    return jnp.log(r.step_time_s)


def loss_fn(theta, weights, y, theta0, data: dict, fit: Sequence[str], prior_weight):
    """Weighted mean squared log error plus the prior term (module docstring)."""
    r = log_predictions(theta, data, fit) - y
    return jnp.sum(weights * r * r) / jnp.sum(weights) + prior_weight * jnp.sum(
        (theta - theta0) ** 2)


class Functions:
    """The compiled functions of one batch and one set of fitted names.

    Attributes:
      predict_and_jacobian: ``theta -> (log pred (N,), d log pred / d theta (N, G, F))``.
      loss_and_grad: ``(theta, weights, y, theta0, prior_weight) -> (L, dL/dtheta)``: the
        gradient the descent follows (tested against finite differences).
      hessian: same arguments -> the Hessian of ``L``, flattened (P, P): central differences
        of the exact gradient, itself built on the host from ``predict_and_jacobian``
        (:func:`hessian_of_loss`; ``jax.hessian`` of the whole model compiled for 30 minutes
        on a 2-core machine, the step that dominated a first ``calibrate``).
      fit_many: see :meth:`fit`.
    """

    def __init__(self, data: dict, fit: tuple[str, ...]):
        def loss(theta, w, y, theta0, pw):
            return loss_fn(theta, w, y, theta0, data, fit, pw)

        def pj(theta):
            f = lambda t: (log_predictions(t, data, fit),) * 2
            jac, value = jax.jacfwd(f, has_aux=True)(theta)
            return value, jac


        def fit_many(weights, mask, y, theta0, pw, lr, steps):
            mask = mask.astype(theta0.dtype)
            opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))

            def one(w):
                def f(delta):
                    return loss(theta0 + mask * delta, w, y, theta0, pw)

                def step(carry, _):
                    delta, state = carry
                    value, g = jax.value_and_grad(f)(delta)
                    updates, state = opt.update(g * mask, state, delta)
                    return (optax.apply_updates(delta, updates), state), value

                delta0 = jnp.zeros_like(theta0)
                (delta, _), _ = jax.lax.scan(step, (delta0, opt.init(delta0)), None,
                                             length=steps)
                return theta0 + mask * delta, f(delta)

            return jax.vmap(one)(weights)

        self.predict_and_jacobian = brief_jit(pj)
        self.loss_and_grad = brief_jit(jax.value_and_grad(loss))
        self.hessian = functools.partial(hessian_of_loss, self)
        self.predict = lambda theta: self.predict_and_jacobian(theta)[0]
        self.fit_many = brief_jit(fit_many, static_argnames="steps")

    def fit(self, weights, mask, y, theta0, prior_weight, learning_rate, steps):
        """Fit once per row of ``weights`` (one vmapped, scanned Adam descent); ``mask[g, j]``
        = 0 freezes that constant at its prior. Returns (theta per row, final loss per row)."""
        return self.fit_many(jnp.asarray(weights), jnp.asarray(mask), jnp.asarray(y),
                             jnp.asarray(theta0), prior_weight, learning_rate, steps=steps)


GN_ITERATIONS = 40
"""Most Levenberg-Marquardt iterations of :func:`fit_gauss_newton` (each one Jacobian)."""


def fit_gauss_newton(fns: "Functions", weights: np.ndarray, mask: np.ndarray, y, theta0,
                     prior_weight: float, iterations: int = GN_ITERATIONS
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The same fit as :meth:`Functions.fit` (one per row of ``weights``, the loss of
    :func:`loss_fn`, ``mask`` freezing constants at their prior) by Levenberg-Marquardt on
    the host, from the compiled Jacobian (``predict_and_jacobian``): the loss is a weighted
    sum of squared log errors plus a quadratic prior, so Gauss-Newton's curvature
    ``2 J^T W J / sum(w) + 2 prior_weight`` is the loss's own up to the residuals' second
    derivative. Each iteration costs one Jacobian of every case, against one compiled
    program of ``steps`` Adam steps for :meth:`Functions.fit`, which on a set of many
    structures executes for an hour on a 2-core machine (31 cases of ``fit_shipped_constants``);
    a step is taken only where it lowers the loss (else the damping grows tenfold), and the
    iteration stops when the largest step is below 1e-9 in theta (logits / logs).

    Returns (theta per row, final loss per row), like :meth:`Functions.fit`."""
    y = np.asarray(y, dtype=float)
    theta0 = np.asarray(theta0, dtype=float)
    free = np.asarray(mask, dtype=float).reshape(-1) > 0
    thetas, losses = [], []
    cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}

    def pj(theta):
        key = theta.tobytes()
        if key not in cache:
            v, jac = fns.predict_and_jacobian(jnp.asarray(theta))
            cache[key] = (np.asarray(v), np.asarray(jac).reshape(len(y), -1))
        return cache[key]

    def loss(theta, w, v):
        r = v - y
        return float(np.sum(w * r * r) / np.sum(w)
                     + prior_weight * np.sum((theta - theta0) ** 2))

    for w in np.asarray(weights, dtype=float):
        theta = theta0.copy()
        v, J = pj(theta)
        current = loss(theta, w, v)
        damping = 1e-3
        for _ in range(iterations if free.any() else 0):
            Jf = J[:, free]
            r = v - y
            d = (theta - theta0).reshape(-1)[free]
            g = 2.0 * (w * r) @ Jf / np.sum(w) + 2.0 * prior_weight * d
            H = 2.0 * (Jf * w[:, None]).T @ Jf / np.sum(w) \
                + 2.0 * prior_weight * np.eye(int(free.sum()))
            step = np.linalg.solve(H + damping * np.diag(np.diag(H)), -g)
            cand = theta.copy().reshape(-1)
            cand[free] += step
            cand = cand.reshape(theta.shape)
            v2, J2 = pj(cand)
            new = loss(cand, w, v2)
            if np.isfinite(new) and new <= current:
                theta, v, J, current = cand, v2, J2, new
                damping = max(damping / 3.0, 1e-9)
                if np.max(np.abs(step)) < 1e-9:
                    break
            else:
                damping *= 10.0
                if damping > 1e9:
                    break
        thetas.append(theta)
        losses.append(current)
    return np.asarray(thetas), np.asarray(losses)


HESSIAN_STEP = 1e-4
"""Step of the central differences of :func:`hessian_of_loss`, in theta units (logits and
logs of the constants, of order one): truncation error of order ``h^2`` times the third
derivative (1e-8 relative), rounding of order ``eps / h`` (1e-12) in float64."""


def loss_gradient(fns: "Functions", theta, w, y, theta0, prior_weight) -> np.ndarray:
    """``dL/dtheta`` from the predictions and their Jacobian (host arithmetic):
    ``2 sum_i w_i r_i J_i / sum_i w_i + 2 prior_weight (theta - theta0)``, ``r = log pred -
    log y`` (the derivative of :func:`loss_fn`)."""
    value, jac = fns.predict_and_jacobian(jnp.asarray(theta))
    value, jac, w = np.asarray(value), np.asarray(jac), np.asarray(w, dtype=float)
    r = value - np.asarray(y)
    g = 2.0 * np.einsum("n,n,n...->...", w, r, jac) / max(w.sum(), 1e-300)
    return g + 2.0 * prior_weight * (np.asarray(theta) - np.asarray(theta0))


def hessian_of_loss(fns: "Functions", theta, w, y, theta0, prior_weight,
                    step: float = HESSIAN_STEP) -> np.ndarray:
    """The Hessian of :func:`loss_fn` at ``theta``, flattened (P, P): central differences of
    the exact gradient :func:`loss_gradient`, symmetrized. It reuses the compiled Jacobian
    (no program of its own) and costs ``2 P`` Jacobian evaluations."""
    theta = np.asarray(theta, dtype=float)
    P = theta.size
    cols = []
    for k in range(P):
        e = np.zeros(P)
        e[k] = step
        up = loss_gradient(fns, theta + e.reshape(theta.shape), w, y, theta0, prior_weight)
        down = loss_gradient(fns, theta - e.reshape(theta.shape), w, y, theta0, prior_weight)
        cols.append((up - down).reshape(-1) / (2.0 * step))
    H = np.stack(cols, axis=1)
    return 0.5 * (H + H.T)


def identified(J: np.ndarray, weights: np.ndarray, prior_weight: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask of constrained constants, variance ratio posterior/prior, max |J| per constant)
    from the Gauss-Newton information of the weighted cases (module docstring);
    ``J``: (N, levels, constants) at ``theta0``."""
    n, G, F = J.shape
    Jw = J.reshape(n, G * F) * (weights > 0)[:, None]
    info = 2.0 / max(weights.sum(), 1.0) * Jw.T @ Jw + 2.0 * prior_weight * np.eye(G * F)
    ratio = 2.0 * prior_weight * np.diag(np.linalg.inv(info))
    jmax = np.abs(Jw).max(axis=0)
    mask = (ratio < IDENTIFIED_RATIO) & (jmax > 0.0)
    return mask.reshape(G, F), ratio.reshape(G, F), jmax.reshape(G, F)


def laplace_sd(H: np.ndarray, residuals: np.ndarray, mask: np.ndarray, prior_weight: float,
               noise_floor: float) -> tuple[np.ndarray, float]:
    """Posterior sd of every theta (Laplace, module docstring) and the residual scale sigma.

    Constrained constants get ``sqrt(diag((2 sigma^2/N) H^-1))`` over the constrained block
    of ``H`` (the loss's Hessian over the N fitted cases); the others their prior sd
    ``sigma / sqrt(N prior_weight)``."""
    G, F = mask.shape
    n = residuals.size
    p = int(mask.sum())
    sigma = max(math.sqrt(float(np.sum(residuals ** 2)) / max(n - p, 1)), noise_floor)
    sd = np.full(G * F, sigma / math.sqrt(n * prior_weight))
    idx = np.flatnonzero(mask.reshape(-1))
    if idx.size:
        block = H[np.ix_(idx, idx)]
        cov = 2.0 * sigma ** 2 / n * np.linalg.pinv(block, hermitian=True)
        sd[idx] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return sd.reshape(G, F), sigma


def laplace_correlations(H: np.ndarray, mask: np.ndarray, levels: Sequence[str],
                         names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{level: {"names", "matrix"}}``: the correlation matrix of each level's constrained
    constants in the Laplace posterior (the inverse of the constrained block of ``H``; the
    scale ``2 sigma^2 / N`` cancels), for levels with two or more."""
    G, F = mask.shape
    idx = np.flatnonzero(mask.reshape(-1))
    out: dict[str, dict[str, Any]] = {}
    if idx.size < 2:
        return out
    cov = np.linalg.pinv(H[np.ix_(idx, idx)], hermitian=True)
    d = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    corr = cov / np.outer(d, d)
    for g in range(G):
        sel = [k for k, i in enumerate(idx) if i // F == g]
        if len(sel) < 2:
            continue
        m = np.clip(corr[np.ix_(sel, sel)], -1.0, 1.0)
        out[levels[g]] = {"names": [names[idx[k] % F] for k in sel],
                          "matrix": [[float(x) for x in row] for row in m]}
    return out


def model_form_of(residuals: np.ndarray, level_index: np.ndarray) -> dict[str, float]:
    """``{"rms_log_error", "within_level_correlation"}`` of leave-one-out log residuals
    (module docstring)."""
    r = np.asarray(residuals, dtype=float)
    lv = np.asarray(level_index)
    ms = float(np.mean(r * r)) if r.size else 0.0
    num, pairs = 0.0, 0
    for g in np.unique(lv):
        x = r[lv == g]
        if x.size > 1:
            num += float(np.sum(x) ** 2 - np.sum(x * x))
            pairs += x.size * (x.size - 1)
    rho = num / pairs / ms if pairs and ms > 0 else 0.0
    return {"rms_log_error": math.sqrt(ms), "within_level_correlation":
            float(np.clip(rho, 0.0, 1.0))}


REPRESENTATIVE_GPU = {"ampere": "A100", "hopper": "H100", "blackwell": "B200",
                      "rubin": "R100"}
"""A GPU name of each generation (for its shipped constants, :func:`constants_for`)."""


def parse_transfer(transfer: str | None) -> tuple[str, str] | None:
    """``"SRC:TGT"`` (two different GPU generations) -> ``(SRC, TGT)``."""
    if transfer is None:
        return None
    src, sep, tgt = str(transfer).partition(":")
    if not sep or src not in GENERATIONS or tgt not in GENERATIONS or src == tgt:
        raise ArgumentError("transfer", f"must be SOURCE:TARGET, two different GPU generations "
                            f"of {', '.join(GENERATIONS)} (got {transfer!r})")
    return src, tgt


# --------------------------------------------------------------------------- the command
@dataclasses.dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` found: the ``calibrate --json`` object and the constants table
    (constrained constants with their 90% intervals) that ``--out`` writes."""

    report: dict
    table: ConstantsTable
    comments: dict


def _errors(log_pred: np.ndarray, log_meas: np.ndarray) -> np.ndarray:
    return np.exp(log_pred - log_meas) - 1.0


def _summary(err: np.ndarray) -> dict[str, float]:
    a = np.abs(np.asarray(err, dtype=float))
    return {"mean_abs_error": float(a.mean()), "median_abs_error": float(np.median(a)),
            "max_abs_error": float(a.max())}


def parse_fit(fit: Sequence[str] | None) -> tuple[tuple[str, ...], dict[str, set[str] | None]]:
    """The constants to fit (default :func:`default_fit`), checked against :data:`INFO`, and
    for each the levels it may be fitted at (``None``: every level).

    An entry is ``NAME`` (fitted at every level the cases have) or ``LEVEL:NAME`` (fitted only
    for that GPU generation or GPU name, e.g. ``blackwell:clock_fraction``); the same name
    may appear with several levels."""
    if fit is None or len(fit) == 0:
        return default_fit(), {name: None for name in default_fit()}
    out: list[str] = []
    levels: dict[str, set[str] | None] = {}
    for entry in fit:
        level, sep, name = str(entry).rpartition(":")
        if name not in INFO:
            raise ArgumentError("fit", f"unknown constant {name!r} in {entry!r}; known "
                                "constants: " + ", ".join(INFO))
        if sep and not level:
            raise ArgumentError("fit", f"{entry!r}: a level is needed before ':'")
        if name not in out:
            out.append(name)
            levels[name] = set()
        if not sep:
            levels[name] = None
        elif levels[name] is not None:
            levels[name].add(level)
    return tuple(out), levels


def check_fit(fit: Sequence[str] | None) -> tuple[str, ...]:
    """The constant names to fit (see :func:`parse_fit`)."""
    return parse_fit(fit)[0]


def allowed_mask(levels: Sequence[str], names: Sequence[str],
                 where: dict[str, set[str] | None]) -> np.ndarray:
    """``mask[g, j]``: constant ``names[j]`` may be fitted at level ``levels[g]``."""
    return np.asarray([[where[n] is None or lvl in where[n] for n in names] for lvl in levels],
                      dtype=bool)


def check_levels(levels: Sequence[str], where: dict[str, set[str] | None],
                 fit: Sequence[str] | None) -> None:
    """Every ``LEVEL:NAME`` of ``--fit`` must name a level the cases have: a fit restricted
    to a level without cases would constrain nothing (ArgumentError ``fit``)."""
    for name, lv in where.items():
        for level in sorted(lv or ()):
            if level not in levels:
                raise ArgumentError("fit", f"{level}:{name}: no case is of level {level!r} "
                                    f"(the cases are {', '.join(levels)}), so the fit would "
                                    "constrain nothing; name a level of the cases or drop "
                                    "the level")


def check_constrains_something(mask: np.ndarray, allowed: np.ndarray, jmax: np.ndarray,
                               ratio: np.ndarray, levels: Sequence[str], names: Sequence[str],
                               pair: tuple[str, str] | None) -> None:
    """A fit that constrains no constant (or, with ``transfer``, none at the source
    generation) would write an empty file: ArgumentError ``fit`` naming the first asked-for
    constant and why the fitted cases leave it free."""
    rows = range(len(levels)) if pair is None else [
        g for g, lv in enumerate(levels) if generation_of_level(lv) == pair[0]]
    if any(mask[g].any() for g in rows):
        return
    asked = [(g, j) for g in rows for j in range(len(names)) if allowed[g, j]]
    if not asked:
        raise ArgumentError("fit", "names no constant at the fitted levels "
                            f"({', '.join(levels[g] for g in rows)}); nothing to fit")
    g, j = asked[0]
    why = ("no fitted case's step time depends on it" if jmax[g, j] == 0.0 else
           "the cases carry less information on it than the prior (posterior/prior variance "
           f"{ratio[g, j]:.2f} >= {IDENTIFIED_RATIO})")
    raise ArgumentError("fit", f"constrains nothing: {levels[g]}.{names[j]} (and "
                        f"{len(asked) - 1} other asked-for constants) stay free because {why}; "
                        "fit constants these cases depend on, or add cases")


def load_case_files(cases: Any) -> tuple[list[Case], list[str]]:
    """Cases from a path, a list of paths or of loaded :class:`Case` (ids must be unique)."""
    if cases is None:
        raise ArgumentError("cases", "required: one or more cases files")
    items = [cases] if isinstance(cases, (str, os.PathLike, Case)) else list(cases)
    if not items:
        raise ArgumentError("cases", "required: one or more cases files")
    out: list[Case] = []
    files: list[str] = []
    for item in items:
        if isinstance(item, Case):
            out.append(item)
        elif isinstance(item, str) and not item.strip():
            raise ArgumentError("cases", "empty path; give a cases file (.toml or .json)")
        else:
            out += load_cases(item)
            files.append(str(item))
    seen: set[str] = set()
    for c in out:
        if c.id in seen:
            raise ArgumentError("cases", f"case id {c.id!r} appears twice across the files")
        seen.add(c.id)
    return out, files


def calibrate(cases: Any, fit: Sequence[str] | None = None, *, base: Any = None,
              prior_weight: float = DEFAULT_PRIOR_WEIGHT, steps: int = DEFAULT_STEPS,
              learning_rate: float = DEFAULT_LEARNING_RATE,
              noise_floor: float = DEFAULT_NOISE_FLOOR, cross_validate: bool = True,
              hold_out: Sequence[str] = (), measured: Sequence[float] | None = None,
              prior: str = "shipped", transfer: str | None = None,
              method: str = "adam") -> Calibration:
    """Fit constants to measured cases (module docstring); returns a :class:`Calibration`.

    Args:
      cases: a cases file, a list of files, or loaded :class:`~cpo_opt.inputs.Case` objects.
      fit: names of :data:`~cpo_opt.model.constants.INFO` to fit (default: all).
      base: a constants table (path or dict) to start from instead of the shipped values; it
        is also the prior.
      prior_weight, steps, learning_rate, noise_floor: see the module docstring.
      cross_validate: run the leave-one-out fits (over the fitted cases).
      hold_out: ids of cases not fitted: reported under ``held_out`` before and after.
      measured: replaces the cases' measured step times (synthetic checks).
      prior: ``"shipped"`` starts from (and pulls toward) the shipped constants, fitted ones
        included; ``"physical"`` from the physical defaults and ``GENERATION_DEFAULTS`` only,
        leaving out :mod:`cpo_opt.model.fitted` (how the shipped fit itself is regenerated).
      transfer: ``"SRC:TGT"``: fit the cases of generation SRC only and carry the fitted
        shifts to generation TGT with wider intervals (module docstring).
      method: ``"adam"`` (the scanned, vmapped descent of :meth:`Functions.fit`, ``steps``
        steps) or ``"gauss-newton"`` (Levenberg-Marquardt from the compiled Jacobian,
        :func:`fit_gauss_newton`: the same minimum, far fewer model evaluations on large
        sets of many structures).
    """
    if method not in ("adam", "gauss-newton"):
        raise ArgumentError("method", f"must be 'adam' or 'gauss-newton' (got {method!r})")
    pair = parse_transfer(transfer)
    if prior not in ("shipped", "physical"):
        raise ArgumentError("prior", f"must be 'shipped' or 'physical' (got {prior!r})")
    names, fit_levels = parse_fit(fit)
    if not (prior_weight > 0 and math.isfinite(prior_weight)):
        raise ArgumentError("prior_weight", f"must be a positive number (got {prior_weight})")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) \
            or not 1 <= steps <= MAX_STEPS:
        shown = (steps if isinstance(steps, (int, np.integer)) and abs(int(steps)) < 10**30
                 else f"{len(str(abs(int(steps))))} digits"
                 if isinstance(steps, (int, np.integer)) else repr(steps))
        raise ArgumentError("steps", f"must be an integer between 1 and {MAX_STEPS} "
                            f"(got {shown})")
    case_list, files = load_case_files(cases)
    if len(case_list) > MAX_CASES:
        raise ArgumentError("cases", f"{len(case_list)} cases; one calibration fits at most "
                            f"{MAX_CASES} (its leave-one-out refits grow as n^2): split them "
                            "by GPU generation")
    base_table = as_table(base)
    warnings = sorted({w for c in case_list for w in [getattr(
        for_gpu(base_table, c.system.gpu_name), "note", None)] if w})
    batch = make_batch(case_list, base_table, fitted=prior == "shipped")
    check_levels(batch.levels, fit_levels, fit)
    y = batch.y
    if measured is not None:
        if len(measured) != len(case_list):
            raise ArgumentError("measured", "needs one step time per case")
        y = np.log(np.asarray(measured, dtype=float))
    fns = batch.functions(names)
    n = len(case_list)
    unknown = [h for h in hold_out if h not in batch.ids]
    if unknown:
        raise ArgumentError("hold_out", f"no case with id {unknown[0]!r}")
    if pair is not None:
        src_cases = [cid for cid, g in zip(batch.ids, batch.level_index)
                     if generation_of_level(batch.levels[g]) == pair[0]]
        if not src_cases:
            raise ArgumentError("transfer", f"no case is of generation {pair[0]!r} (the cases "
                                f"are {', '.join(batch.levels)}): nothing to transfer from")
        hold_out = tuple(hold_out) + tuple(c for c in batch.ids if c not in src_cases)
    train = np.asarray([cid not in set(hold_out) for cid in batch.ids], dtype=float)
    if not train.any():
        raise ArgumentError("hold_out", "holds out every case; nothing left to fit")
    theta0 = prior_theta(batch, names)
    log_before, J = (np.asarray(a) for a in fns.predict_and_jacobian(jnp.asarray(theta0)))
    allowed = allowed_mask(batch.levels, names, fit_levels)
    mask, ratio, jmax = identified(J * allowed[None], train, prior_weight)
    check_constrains_something(mask, allowed, jmax, ratio, batch.levels, names, pair)

    # row 0: the fit; row 1 + i: the fit without case i (a held-out case's row repeats row 0)
    weights = np.tile(train, (n + 1, 1))
    if cross_validate:
        weights[1:] *= 1.0 - np.eye(n)
        weights[1:][train == 0] = train
    if method == "gauss-newton":
        thetas, losses = fit_gauss_newton(fns, weights, mask, y, theta0, prior_weight)
    else:
        thetas, losses = fns.fit(weights, mask, y, theta0, prior_weight, learning_rate,
                                 int(steps))
    thetas = np.asarray(thetas)
    theta = thetas[0]
    if not np.all(np.isfinite(theta)):
        raise InputError("--cases: the fit did not converge to finite constants; check the "
                         "measured step times (measured.step_time_s) of "
                         + ", ".join(files or ["the cases"]))
    log_after = np.asarray(fns.predict(jnp.asarray(theta)))
    H = np.asarray(fns.hessian(jnp.asarray(theta), jnp.asarray(train), jnp.asarray(y),
                               jnp.asarray(theta0), prior_weight))
    fitted = train > 0
    sd, sigma = laplace_sd(H, (log_after - y)[fitted], mask, prior_weight, noise_floor)

    err_before = _errors(log_before, y)
    err_after = _errors(log_after, y)
    report: dict[str, Any] = {
        "constants": {}, "levels": {},
        "before": _summary(err_before[fitted]), "after": _summary(err_after[fitted]),
    }
    err_loo = None
    if cross_validate and fitted.sum() > 1:
        loo = np.array([np.asarray(fns.predict(jnp.asarray(thetas[1 + i])))[i]
                        if fitted[i] else np.nan for i in range(n)])
        err_loo = _errors(loo, y)
        report["cross_validation"] = {"method": "leave-one-out",
                                      **_summary(err_loo[fitted]),
                                      **model_form_of((loo - y)[fitted],
                                                      batch.level_index[fitted])}
    else:
        report["cross_validation"] = {"method": "none", "mean_abs_error": None,
                                      "median_abs_error": None, "max_abs_error": None}
    if not fitted.all():
        report["held_out"] = {"ids": [c for c, f in zip(batch.ids, fitted) if not f],
                              "before": _summary(err_before[~fitted]),
                              "after": _summary(err_after[~fitted])}

    table_values: dict[str, dict[str, float]] = {}
    table_intervals: dict[str, dict[str, tuple[float, float]]] = {}
    comments: dict[str, list[str]] = {}
    unconstrained = []
    counts = np.bincount(batch.level_index[fitted], minlength=len(batch.levels))
    order = np.argsort(-counts, kind="stable")
    for g in order:
        level = batch.levels[g]
        entries = {}
        for j, name in enumerate(names):
            t, s = float(theta[g, j]), float(sd[g, j])
            value = float(from_theta(name, t))
            low, high = (float(from_theta(name, t - Z90 * s)),
                         float(from_theta(name, t + Z90 * s)))
            prior = float(from_theta(name, theta0[g, j]))
            ok = bool(mask[g, j])
            if ok:
                value, low, high, clipped = physical(name, level, value, low, high, files)
                if clipped:
                    warnings.append(f"{level}.{name}: the 90% interval reaches beyond the "
                                    "constant's physical range (constants_file.RANGES) and is "
                                    "cut at its end")
            entries[name] = {"value": value, "low": low, "high": high, "unit": INFO[name].unit,
                             "prior": prior, "constrained": ok, "level": level,
                             "variance_ratio": float(ratio[g, j])}
            if ok:
                table_values.setdefault(level, {})[name] = value
                table_intervals.setdefault(level, {})[name] = (low, high)
            elif not allowed[g, j]:
                continue  # not asked for at this level: neither fitted nor reported
            else:
                why = ("no fitted case's step time depends on it" if jmax[g, j] == 0.0 else
                       "the cases carry less information on it than the prior "
                       f"(posterior/prior variance {ratio[g, j]:.2f} >= {IDENTIFIED_RATIO})")
                unconstrained.append({"level": level, "name": name, "value": prior,
                                      "reason": why})
                comments.setdefault(level, []).append(
                    f"{name}: not constrained by these cases, kept at {prior:g}: {why}")
        report["levels"][level] = {"cases": int(counts[g]), "constants": entries}
    report["constants"] = report["levels"][batch.levels[order[0]]]["constants"]
    report["unconstrained"] = unconstrained
    rows = []
    for i, cid in enumerate(batch.ids):
        row = {"id": cid, "level": batch.levels[batch.level_index[i]], "fitted": bool(fitted[i]),
               "measured_step_time_s": float(np.exp(y[i])),
               "before_step_time_s": float(np.exp(log_before[i])),
               "after_step_time_s": float(np.exp(log_after[i])),
               "error_before": float(err_before[i]), "error_after": float(err_after[i])}
        if err_loo is not None and fitted[i]:
            row["error_cross_validation"] = float(err_loo[i])
        rows.append(row)
    report["cases"] = rows
    report["fit"] = [str(e) for e in fit] if fit else list(names)
    report["method"] = {
        "loss": "mean squared log error of step time + prior_weight * sum (theta - theta0)^2",
        "parameterisation": "logit for fractions, log for positive quantities",
        "optimizer": f"adam (optax), {int(steps)} steps, cosine-decayed learning rate "
                     f"{learning_rate}",
        "interval": "90%, Laplace approximation (Hessian of the loss at the optimum)",
        "prior_weight": prior_weight, "residual_sigma": sigma,
        "final_loss": float(np.asarray(losses)[0]),
    }
    report["cases_files"] = files
    report["n"] = int(fitted.sum())
    report["generations"] = generations_of(batch.levels)
    report["warnings"] = warnings
    about = {"written_by": "cpo-opt calibrate", "cases_files": files,
             "n_cases": int(fitted.sum()), "fit": report["fit"],
             "mean_abs_error_before": report["before"]["mean_abs_error"],
             "mean_abs_error_after": report["after"]["mean_abs_error"]}
    if err_loo is not None:
        about["median_abs_error_cross_validation"] = report["cross_validation"][
            "median_abs_error"]
    correlations = laplace_correlations(H, mask, batch.levels, names)
    report["posterior"] = {"correlation": correlations,
                           "parameterisation": "logit of fractions, log of the others"}
    if err_loo is not None:
        cv = report["cross_validation"]
        about["model_form"] = {"sd": cv["rms_log_error"],
                               "correlation": cv["within_level_correlation"]}
    if correlations:
        about["correlation"] = correlations
    generations = generations_of(batch.levels)
    if pair is not None:
        generations = sorted(set(generations_of(
            [lv for lv, n in zip(batch.levels, counts) if n]) + list(pair)))
        _transfer(report, pair, batch, names, theta, theta0, sd, mask, fns, y, fitted,
                  table_values, table_intervals, warnings, files, base_table, prior)
        about["transfer"] = f"{pair[0]} -> {pair[1]}: shifts of the fitted constants carried " \
            "to the target's shipped values, interval sd^2 = sd_fit^2 + shift^2"
        report["generations"] = generations
    table = ConstantsTable(table_values, table_intervals, "<calibrate>", about, generations)
    return Calibration(report, table, comments)


def generation_of_level(level: str) -> str | None:
    """The generation a fit level belongs to (a generation, or a GPU name's)."""
    return level if level in GENERATIONS else generation_of(level)


def _transfer(report, pair, batch, names, theta, theta0, sd, mask, fns, y, fitted,
              table_values, table_intervals, warnings, files, base_table, prior) -> None:
    """Carry the source level's fitted shifts to the target generation (module docstring):
    the target's values and intervals go into the table, the held-out target cases are
    predicted before and after."""
    src, tgt = pair
    g_src = next(g for g, lv in enumerate(batch.levels) if generation_of_level(lv) == src)
    rep = REPRESENTATIVE_GPU[tgt]
    shipped = constants_for(rep, for_gpu(base_table, rep), fitted=prior == "shipped")
    theta_t = np.asarray(theta, dtype=float).copy()
    tgt_rows = [g for g, lv in enumerate(batch.levels) if generation_of_level(lv) == tgt]
    out: dict[str, Any] = {}
    for j, name in enumerate(names):
        if not mask[g_src, j]:
            continue
        delta = float(theta[g_src, j] - theta0[g_src, j])
        t0 = float(to_theta(name, float(np.asarray(getattr(shipped, name)))))
        tt = t0 + delta
        s_t = math.sqrt(float(sd[g_src, j]) ** 2 + delta ** 2)
        value = float(from_theta(name, tt))
        low, high = float(from_theta(name, tt - Z90 * s_t)), float(from_theta(name, tt + Z90 * s_t))
        value, low, high, clipped = physical(name, tgt, value, low, high, files)
        if clipped:
            warnings.append(f"{tgt}.{name}: the transferred interval reaches beyond the "
                            "constant's physical range and is cut at its end")
        table_values.setdefault(tgt, {})[name] = value
        table_intervals.setdefault(tgt, {})[name] = (low, high)
        out[name] = {"value": value, "low": low, "high": high, "unit": INFO[name].unit,
                     "shipped": float(from_theta(name, t0)), "shift_theta": delta,
                     "source_value": float(from_theta(name, theta[g_src, j]))}
        for g in tgt_rows:  # each target level from its own prior (a GPU may differ from
            theta_t[g, j] = theta0[g, j] + delta  # the generation's representative)
    report["transfer"] = {
        "from": src, "to": tgt, "constants": out,
        "rule": "theta_target = theta_shipped_target + (theta_fit - theta_prior) at the "
                "source level; sd_target^2 = sd_fit^2 + shift^2 (logit/log coordinates)"}
    held = np.asarray([i for i, g in enumerate(batch.level_index)
                       if g in tgt_rows and not fitted[i]], dtype=int)
    if held.size:
        before = np.asarray(fns.predict(jnp.asarray(theta0)))[held]
        after = np.asarray(fns.predict(jnp.asarray(theta_t)))[held]
        report["transfer"]["held_out"] = {
            "ids": [batch.ids[i] for i in held],
            "before": _summary(_errors(before, y[held])),
            "after": _summary(_errors(after, y[held])),
            "errors_before": [float(e) for e in _errors(before, y[held])],
            "errors_after": [float(e) for e in _errors(after, y[held])]}


def generations_of(levels: Sequence[str]) -> list[str]:
    """The GPU generations of the fitted levels: what the written file covers (a level that
    is a GPU name without a known generation covers that GPU by its own name)."""
    return sorted({g for g in (generation_of(lvl) if lvl not in GENERATIONS else lvl
                               for lvl in levels) if g})


def physical(name: str, level: str, value: float, low: float, high: float,
             files: Sequence[str]) -> tuple[float, float, float, bool]:
    """``(value, low, high, clipped)`` of a fitted constant inside its physical range
    (:data:`cpo_opt.inputs.constants_file.RANGES`). A fitted value outside it means no
    physical constant explains the measurements (bad input, naming ``--cases``); an interval
    end beyond it is cut at the range's end (the posterior restricted to the range)."""
    lo, hi = RANGES[name]
    if not (math.isfinite(value) and lo <= value <= hi):
        raise InputError(f"--cases: the fit drives {level}.{name} to {value:.3g}, outside its "
                         f"physical range [{lo:g}, {hi:g}] (constants_file.RANGES): no "
                         "physical constant explains the measured step times of "
                         + ", ".join(files or ["the cases"])
                         + "; check their measured.step_time_s, or --fit fewer constants")
    nl = lo if not math.isfinite(low) else min(max(low, lo), value)
    nh = hi if not math.isfinite(high) else max(min(high, hi), value)
    return value, nl, nh, (nl, nh) != (low, high)


def write(calibration: Calibration, path) -> str:
    """Write the fitted constants as a constants file (TOML or JSON by the extension;
    ``path`` may be a target checked before the fit,
    :func:`cpo_opt.inputs.constants_file.check_out`); returns the path."""
    from cpo_opt.inputs.constants_file import write_constants
    header = ("Constants fitted by `cpo-opt calibrate` (see docs/calibration.md).\n"
              "Each value carries its 90% interval (Laplace approximation); constants the\n"
              "cases did not constrain are left out (commented) and keep their shipped values.")
    return str(write_constants(path, calibration.table, header, calibration.comments))
