"""``calibrate``, constants files and intervals (issue 10).

Every fit here runs on the shipped A100 set (18 cases), so one compilation of the fitting
function (batch of 18 cases, 19 weight rows) serves all of them: the synthetic recovery
replaces the measured times with the model's own predictions at known constants, the split
test holds half the cases out by weight.

The tests that fit (and the loss-gradient check) are marked ``slow``: tracing the fit's
functions (the vmapped, scanned descent, the Jacobian and the Hessian of the 18-case loss)
takes 10-20 s even with a warm compile cache, and compiling them cold about 4 minutes. The
step-time interval (its own compilation) is ``slow`` too. The constants files and their
bad-input errors stay in the fast loop.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from cpo_opt.analysis import calibrate as C
from cpo_opt.inputs import load_cases
from cpo_opt.inputs.constants_file import (ConstantsTable, InputError, as_table, dumps,
                                           read_constants, write_constants)
from cpo_opt.model.constants import INFO

A100 = "cpo_opt/data/megatron-a100.toml"
STEPS = 200
FIT = C.default_fit()
"""Every test fits the same constants with the same step count on the same 18 cases, so the
compiled functions are shared."""


@pytest.fixture(scope="module")
def cases():
    return load_cases(A100)


@pytest.fixture(scope="module")
def fitted(cases):
    """The default fit (every constant) of the whole A100 set, with leave-one-out, from the
    physical constants (the shipped ones were themselves fitted on these cases)."""
    return C.calibrate(cases, steps=STEPS, prior="physical")


# --------------------------------------------------------------------------- constants files
def test_constants_file_round_trips(tmp_path):
    t = as_table({"*": {"kernel_overhead_s": 5e-6},
                  "ampere": {"gemm_eff_bf16": {"value": 0.72, "low": 0.70, "high": 0.74,
                                               "unit": "fraction"}},
                  "H100-SXM": {"hbm_eff": 0.9},
                  "about": {"cases_files": ["a.toml"], "n_cases": 3}})
    path = tmp_path / "c.toml"
    write_constants(path, t, "header", {"ampere": ["hbm_eff: not constrained"]})
    back = read_constants(path)
    assert dict(back) == dict(t)
    assert back.intervals == t.intervals == {"ampere": {"gemm_eff_bf16": (0.70, 0.74)}}
    assert back.about == t.about
    assert dumps(back) == dumps(t)


@pytest.mark.parametrize("text, rule", [
    ('["*"]\nnot_a_constant = 0.5\n', "unknown constant"),
    ('["*"]\nhbm_eff = 1.5\n', "(0, 1]"),
    ('["*"]\nhbm_eff = 0.0\n', "(0, 1]"),
    ('["*"]\nkernel_overhead_s = -1e-6\n', "> 0"),
    ('["*"]\nkernel_overhead_s = nan\n', "finite"),
    ('["*"]\nhbm_eff = "high"\n', "number"),
    ('["*"]\nhbm_eff = { value = 0.8, low = 0.85, high = 0.9 }\n', "low <= value <= high"),
    ('["*"]\nhbm_eff = { value = 0.8, low = 0.7 }\n', "both low and high"),
    ('["*"]\nhbm_eff = { value = 0.8, unit = "s" }\n', "unit"),
    ('["*"]\nhbm_eff = { value = 0.8, sigma = 0.1 }\n', "unknown key"),
    ("ampere = 3\n", "table of constants"),
])
def test_malformed_constants_file_is_bad_input(tmp_path, text, rule):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        read_constants(path)
    msg = str(e.value)
    assert "bad.toml" in msg and rule in msg and "\n" not in msg


def test_malformed_constants_file_exits_2_with_one_line(tmp_path, capsys):
    """In-process ``main(argv)`` (the real process's exit status is tested once, in
    tests/test_sensitivity.py)."""
    from cpo_opt.cli.main import main
    path = tmp_path / "bad.toml"
    path.write_text('[ampere]\ngemm_eff_bf16 = 1.2\n')
    assert main(["validate", "--constants", str(path), "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "bad.toml" in lines[0] and "ampere.gemm_eff_bf16" in lines[0]
    assert "(0, 1]" in lines[0]


def test_levels_resolve_gpu_over_generation_over_global():
    from cpo_opt.model.constants import constants_for
    t = as_table({"*": {"hbm_eff": 0.5}, "ampere": {"hbm_eff": 0.6},
                  "A100-SXM-80GB": {"hbm_eff": 0.7}})
    assert float(constants_for("A100-SXM-80GB", t).hbm_eff) == 0.7
    assert float(constants_for("A800", t).hbm_eff) == 0.6
    assert float(constants_for("H100-SXM", t).hbm_eff) == 0.5


# --------------------------------------------------------------------------- gradient
@pytest.mark.slow  # traces the 18-case loss and its gradient (5-9 s warm)
def test_loss_gradient_matches_finite_differences(cases):
    batch = C.make_batch(cases)
    theta0 = C.prior_theta(batch, FIT)
    offset = np.linspace(-0.3, 0.3, len(FIT))[None, :]
    theta = jnp.asarray(theta0 + offset)
    fns = batch.functions(FIT)
    args = (jnp.ones(len(cases)), jnp.asarray(batch.y), jnp.asarray(theta0), 1e-3)
    value, grad = fns.loss_and_grad(theta, *args)
    assert np.all(np.isfinite(np.asarray(grad)))
    h = 1e-5
    for j in range(len(FIT)):
        e = np.zeros(theta.shape)
        e[0, j] = h
        up = float(fns.loss_and_grad(theta + e, *args)[0])
        down = float(fns.loss_and_grad(theta - e, *args)[0])
        fd = (up - down) / (2 * h)
        assert float(grad[0, j]) == pytest.approx(fd, rel=1e-4, abs=1e-8), FIT[j]
    assert float(np.abs(np.asarray(grad)).max()) > 1e-3


# --------------------------------------------------------------------------- fitting
@pytest.mark.slow  # the fit (module docstring)
def test_fit_stays_physical_and_reports_unconstrained(fitted):
    r = fitted.report
    for level in r["levels"].values():
        for name, c in level["constants"].items():
            assert c["low"] <= c["value"] <= c["high"]
            if c["unit"] == "fraction":
                assert 0 < c["low"] and c["high"] <= 1
            else:
                assert c["low"] > 0
    unc = {u["name"] for u in r["unconstrained"]}
    # no A100 case runs fp8 and memory reservations do not change a step time
    assert {"gemm_eff_fp8", "reserved_bytes"} <= unc
    for u in r["unconstrained"]:
        c = r["levels"][u["level"]]["constants"][u["name"]]
        assert c["value"] == pytest.approx(c["prior"], rel=1e-9)
    assert r["constants"]["gemm_eff_bf16"]["constrained"]
    # the written table holds the constrained constants only, each with its interval
    assert set(fitted.table["ampere"]) == {n for n, c in r["constants"].items()
                                           if c["constrained"]}
    assert set(fitted.table.intervals["ampere"]) == set(fitted.table["ampere"])


@pytest.mark.slow  # the fit
def test_fit_improves_the_fitted_cases_and_reports_leave_one_out(fitted):
    r = fitted.report
    assert r["after"]["mean_abs_error"] <= r["before"]["mean_abs_error"] + 1e-9
    cv = r["cross_validation"]
    assert cv["method"] == "leave-one-out"
    assert 0 <= cv["median_abs_error"] < 0.10
    assert all("error_cross_validation" in row for row in r["cases"])
    # an out-of-sample prediction is never better on average than the in-sample fit
    assert cv["mean_abs_error"] >= r["after"]["mean_abs_error"] - 1e-6


@pytest.mark.slow  # a fit
def test_synthetic_cases_recover_known_constants(cases):
    """Measured times generated by the model at known constants (plus 1% noise) are fitted
    from the shipped values; the known values lie inside the 90% intervals."""
    batch = C.make_batch(cases)
    theta0 = C.prior_theta(batch, FIT)
    true = {n: float(C.from_theta(n, theta0[0, j])) for j, n in enumerate(FIT)}
    true.update(gemm_eff_bf16=0.68, hbm_eff=0.80, link_eff_scale_up=0.70,
                kernel_overhead_s=6e-6)
    theta_true = np.array([[float(C.to_theta(n, true[n])) for n in FIT]])
    logp = np.asarray(batch.functions(FIT).predict(jnp.asarray(theta_true)))
    noise = np.random.default_rng(0).normal(0.0, 0.01, logp.shape)
    cal = C.calibrate(cases, FIT, steps=STEPS, measured=np.exp(logp + noise),
                      prior_weight=1e-5)
    consts = cal.report["constants"]
    checked = 0
    for name in FIT:
        c = consts[name]
        if not c["constrained"]:
            continue
        checked += 1
        assert c["low"] <= true[name] <= c["high"], (name, c, true[name])
    assert checked >= 2
    assert consts["gemm_eff_bf16"]["constrained"]
    assert abs(consts["gemm_eff_bf16"]["value"] - 0.68) < abs(0.75 - 0.68) / 2
    assert cal.report["after"]["mean_abs_error"] < 0.02


@pytest.mark.slow  # a fit
def test_fitting_half_predicts_the_other_half(cases):
    """Split: even-indexed cases of the A100 file (0, 2, ...) are fitted, odd-indexed ones
    held out. Both halves hold both papers; the Korthikanti et al. pairs split into full
    recompute (fitted) and selective recompute (held out), so the held-out half also tests a
    recompute mode the fit never saw."""
    held = [c.id for i, c in enumerate(cases) if i % 2 == 1]
    # from the physical constants: the shipped ones were fitted on all 18, held-out half included
    cal = C.calibrate(cases, steps=STEPS, hold_out=held, prior="physical")
    h = cal.report["held_out"]
    assert h["ids"] == held
    assert h["after"]["mean_abs_error"] <= h["before"]["mean_abs_error"] + 1e-9
    print("\nheld-out mean |error| before %.4f after %.4f; fitted-half LOO median %.4f" % (
        h["before"]["mean_abs_error"], h["after"]["mean_abs_error"],
        cal.report["cross_validation"]["median_abs_error"]))


# --------------------------------------------------------------------------- intervals
@pytest.mark.slow  # compiles the interval's derivatives for an A100 case (4-6 s warm)
def test_step_time_interval_brackets_the_point_and_widens_with_the_interval(cases):
    from cpo_opt.analysis.uncertainty import step_time_interval
    from cpo_opt import api
    c = cases[1]
    narrow = as_table({"ampere": {"gemm_eff_bf16": {"value": 0.75, "low": 0.74, "high": 0.76}}})
    wide = as_table({"ampere": {"gemm_eff_bf16": {"value": 0.75, "low": 0.65, "high": 0.83}}})
    point = as_table({"ampere": {"gemm_eff_bf16": 0.75}})
    s_n = api._with_constants(c.system, narrow)
    s_w = api._with_constants(c.system, wide)
    i_n = step_time_interval(c.model, s_n, c.plan)
    i_w = step_time_interval(c.model, s_w, c.plan)
    assert i_n.low < i_n.value < i_n.high
    assert i_w.high - i_w.low > 5 * (i_n.high - i_n.low)
    assert i_n.value == pytest.approx(i_w.value)
    # no interval in the table: a point
    i_p = step_time_interval(c.model, api._with_constants(c.system, point), c.plan)
    assert i_p.low == i_p.value == i_p.high


@pytest.mark.slow  # reads the fit
def test_evaluate_reports_interval_only_with_intervals(tmp_path, fitted):
    import cpo_opt
    path = tmp_path / "fit.toml"
    C.write(fitted, path)
    args = ("megatron-1t", "dgx-a100-selene", "tp=8,pp=32")
    plain = cpo_opt.evaluate(*args).to_dict()
    r = cpo_opt.evaluate(*args, constants=str(path)).to_dict()
    assert "step_time_interval_s" not in plain
    low, high = r["step_time_interval_s"]
    assert low < r["step_time_s"] < high


@pytest.mark.slow  # a fit through the CLI
def test_calibrate_cli_writes_a_file_that_constants_reads(tmp_path, capsys, fitted):
    """In-process (shares the module's compilations): calibrate --out, then validate with
    --constants reproduces the fitted errors."""
    from cpo_opt.cli.main import main
    out = tmp_path / "fit.toml"
    assert main(["calibrate", "--cases", A100, "--steps", str(STEPS), "--out", str(out),
                 "--prior", "physical", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("constants", "before", "after", "cross_validation", "unconstrained"):
        assert key in r
    c = r["constants"]["gemm_eff_bf16"]
    assert c["unit"] == "fraction" and 0 < c["low"] <= c["value"] <= c["high"] <= 1
    assert c["value"] == pytest.approx(fitted.report["constants"]["gemm_eff_bf16"]["value"])
    assert isinstance(r["cross_validation"]["median_abs_error"], float)
    table = read_constants(out)
    assert table["ampere"]["gemm_eff_bf16"] == pytest.approx(c["value"])
    assert main(["validate", "--constants", str(out), "--json"]) == 0
    v = json.loads(capsys.readouterr().out)
    assert v["mean_abs_error"] == pytest.approx(r["after"]["mean_abs_error"], rel=1e-6)
    # --method gauss-newton: the same fit by Levenberg-Marquardt lands inside Adam's interval
    assert main(["calibrate", "--cases", A100, "--method", "gauss-newton", "--prior",
                 "physical", "--fit", "ampere:gemm_eff_bf16", "--json"]) == 0
    g = json.loads(capsys.readouterr().out)["constants"]["gemm_eff_bf16"]
    assert c["low"] <= g["value"] <= c["high"] and g["value"] == pytest.approx(c["value"], abs=0.01)


def test_unknown_fit_name_is_bad_input(capsys):
    from cpo_opt.cli.main import main
    assert main(["calibrate", "--cases", A100, "--fit", "warp_speed", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "warp_speed" in err


def test_study_runs_with_a_constants_table_and_takes_its_intervals():
    """``reproduce --constants``: the study's systems carry the table, and the speedup
    interval's ranges come from the table's fitted intervals where it has them."""
    from cpo_opt.study import load_study
    from cpo_opt.study.uncertainty import STATED_RANGES, ranges_from_table
    t = as_table({"blackwell": {"gemm_eff_fp8": {"value": 0.6, "low": 0.55, "high": 0.65}},
                  "*": {"hbm_eff": 0.8}})
    study = load_study("tiny", constants=t)
    for spec in study.fabrics.values():
        assert float(spec.system.constants.gemm_eff_fp8) == pytest.approx(0.6)
        assert float(spec.system.constants.hbm_eff) == pytest.approx(0.8)
    plain = load_study("tiny")
    from cpo_opt.model.constants import constants_for
    gpu = study.fabrics["copper"].gpu_name
    assert float(plain.fabrics["copper"].system.constants.gemm_eff_fp8) == pytest.approx(
        float(constants_for(gpu).gemm_eff_fp8))
    r = ranges_from_table(t, gpu, study.fabrics["copper"].system.constants)
    assert r["gemm_eff_fp8"] == (0.55, 0.65)
    # no interval in the table: the stated range around the value the system uses (0.8)
    assert r["hbm_eff"] == pytest.approx((0.8 * 0.9, 0.8 * 1.1))
    assert ranges_from_table(t, "A100-SXM-80GB")["gemm_eff_fp8"] == STATED_RANGES["gemm_eff_fp8"]


def test_default_ranges_sit_around_the_gpus_own_constants_and_take_the_shipped_fit():
    """The study's default speedup interval ranges: around the GPU's per-generation constants
    (Blackwell's fp8 GEMM fraction 0.55, not the global 0.70), and the shipped fit's 90%
    interval where it set a constant."""
    from cpo_opt.model import fitted
    from cpo_opt.model.constants import constants_for
    from cpo_opt.study.uncertainty import ranges_for
    base = constants_for("GB200")
    r = ranges_for("GB200", base)
    lo, hi = r["gemm_eff_fp8"]
    assert lo < float(base.gemm_eff_fp8) < hi
    for name, iv in fitted.INTERVALS.get("blackwell", {}).items():
        assert r[name] == tuple(iv)
    # a user table that sets a fitted constant replaces its interval by the stated range
    from cpo_opt.study.uncertainty import ranges_from_table, stated_range
    t = as_table({"*": {"host_sync_s": 1e-4}})
    assert ranges_from_table(t, "GB200", constants_for("GB200", t))["host_sync_s"] == \
        stated_range("host_sync_s", 1e-4)


# --------------------------------------------------------------------------- levels, prior
def test_fit_entries_may_name_a_level():
    names, where = C.parse_fit(["ampere:gemm_eff_bf16", "hbm_eff", "blackwell:gemm_eff_bf16",
                                "hopper:host_sync_s"])
    assert names == ("gemm_eff_bf16", "hbm_eff", "host_sync_s")
    assert where == {"gemm_eff_bf16": {"ampere", "blackwell"}, "hbm_eff": None,
                     "host_sync_s": {"hopper"}}
    mask = C.allowed_mask(("ampere", "hopper"), names, where)
    assert mask.tolist() == [[True, True, False], [False, True, True]]
    # a bare name wins over a level-restricted one
    assert C.parse_fit(["hopper:hbm_eff", "hbm_eff"])[1]["hbm_eff"] is None


@pytest.mark.parametrize("entry", ["warp:drive", ":hbm_eff", "ampere:"])
def test_malformed_fit_entry_is_bad_input(entry):
    from cpo_opt.inputs.loaders import ArgumentError
    with pytest.raises(ArgumentError):
        C.parse_fit([entry])


@pytest.mark.slow  # traces the fit's functions for another set of names (10-20 s warm)
def test_a_level_restricted_fit_leaves_other_levels_alone(cases):
    """Only the named level's constant moves; at any other level it is neither fitted nor
    reported."""
    # a level the cases lack constrains nothing (bad input); so two levels: fp8 runs on
    # Hopper and GB200 (cpo_opt/data/dense-fit.toml), the fit restricted to Hopper
    two = [c for c in load_cases("cpo_opt/data/dense-fit.toml")
           if c.id in ("nemo2407-llama3-8b-h100-8", "nemo2407-llama2-70b-h100-64",
                       "nemo2407-llama3-70b-h100-64", "mb2604-llama3-70b-gb200-fsdp-fp8",
                       "mb2604-llama3-70b-gb200-mxfp8")]
    cal = C.calibrate(two, ["hopper:gemm_eff_fp8"], steps=5, cross_validate=False)
    assert "gemm_eff_fp8" in cal.table.get("hopper", {})
    assert "gemm_eff_fp8" not in cal.table.get("blackwell", {})
    assert not [u for u in cal.report["unconstrained"] if u["level"] == "blackwell"]
    with pytest.raises(C.ArgumentError, match="constrain nothing"):
        C.calibrate(cases, ["hopper:gemm_eff_bf16"], steps=5, cross_validate=False)


def test_shipped_fitted_constants_apply_and_the_physical_prior_leaves_them_out(monkeypatch):
    from cpo_opt.model import constants as K
    from cpo_opt.model import fitted
    monkeypatch.setattr(fitted, "VALUES", {"hopper": {"hbm_eff": 0.5}})
    assert float(K.constants_for("H100-SXM").hbm_eff) == 0.5
    assert float(K.constants_for("H100-SXM", fitted=False).hbm_eff) == K.HBM_EFF
    assert float(K.constants_for("A100-SXM-80GB").hbm_eff) == K.HBM_EFF
    # a user's table still wins over the shipped fit
    assert float(K.constants_for("H100-SXM", as_table({"hopper": {"hbm_eff": 0.7}})).hbm_eff) \
        == 0.7
    with pytest.raises(Exception):
        C.calibrate(A100, ["hbm_eff"], steps=1, prior="guess")


def test_shipped_fitted_module_is_what_the_script_writes():
    """cpo_opt/model/fitted.py is generated by experiments/fit_shipped_constants.py: its
    values are physical and every one carries its interval."""
    from cpo_opt.model import fitted
    for level, values in fitted.VALUES.items():
        for name, v in values.items():
            assert name in INFO
            lo, hi = fitted.INTERVALS[level][name]
            assert lo <= v <= hi
            assert v > 0 and (INFO[name].unit != "fraction" or v <= 1.0)
    if fitted.VALUES:
        assert fitted.ABOUT["command"] == "python experiments/fit_shipped_constants.py"


@pytest.mark.slow  # two fits of the A100 set (the Adam one shares the fixture's compilation)
def test_gauss_newton_reaches_the_minimum_adam_reaches(cases):
    """``method="gauss-newton"`` (Levenberg-Marquardt from the compiled Jacobian, the
    shipped fit's method) recovers known constants from synthetic measurements (1% noise)
    and lands at a loss no higher than Adam's descent on the same problem."""
    fit = ("gemm_eff_bf16", "hbm_eff", "kernel_overhead_s")
    batch = C.make_batch(cases)
    theta0 = C.prior_theta(batch, fit)
    theta_true = theta0.copy()
    theta_true[0, 0] = float(C.to_theta("gemm_eff_bf16", 0.66))
    theta_true[0, 1] = float(C.to_theta("hbm_eff", 0.82))
    logp = np.asarray(batch.functions(fit).predict(jnp.asarray(theta_true)))
    noise = np.random.default_rng(1).normal(0.0, 0.01, logp.shape)
    kw = dict(measured=np.exp(logp + noise), prior_weight=1e-5, cross_validate=False)
    gn = C.calibrate(cases, fit, method="gauss-newton", **kw)
    adam = C.calibrate(cases, fit, steps=STEPS, **kw)
    g = gn.report["constants"]["gemm_eff_bf16"]
    assert g["constrained"] and g["low"] <= 0.66 <= g["high"], g
    assert abs(g["value"] - 0.66) < 0.02
    assert gn.report["after"]["mean_abs_error"] <= adam.report["after"]["mean_abs_error"] + 1e-3
    with pytest.raises(C.ArgumentError):
        C.calibrate(cases, fit, method="newton", cross_validate=False)
