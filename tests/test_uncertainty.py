"""Uncertainty that reaches the decision (issue 22): sampled constants, the model-form term,
stack alternatives, compare's interval and probability, robust optimization.

Independent checks: the sampled constants against the intervals they came from (quantiles)
and a known correlation; the vmapped samples against one-by-one evaluations of the exact
model with each sample's constants; the probability against a count of the sampled
speedups; the robustness report against a brute-force recount; the direction of
``probability_faster`` against the SPEC sentence (the baseline, ``--system``, faster).
"""

import json
import math

import numpy as np
import pytest

import cpo_opt
from cpo_opt.analysis import uncertainty as U
from cpo_opt.analysis.calibrate import Z90, to_theta
from cpo_opt.inputs.constants_file import ConstantsTable
from cpo_opt.inputs.loaders import load_model, load_plan, load_system


@pytest.fixture(scope="module")
def a100():
    m = load_model("gpt3-175b")
    s = load_system("dgx-a100-selene")
    p = load_plan("tp=8,pp=8,vpp=2,micro_batch=1,global_batch=1536", m, s)
    return m, s, p


def test_sampled_constants_reproduce_their_intervals(a100):
    _, s, _ = a100
    post = U.posterior_of(s, model_form=False)
    (lvl, name, mean, sd), = [e for e in post.entries if e[1] == "gemm_eff_bf16"]
    from cpo_opt.model import fitted
    lo, hi = fitted.INTERVALS["ampere"]["gemm_eff_bf16"]
    draws = U.draw([post], 8192, seed=3)
    c = np.asarray(U.constants_batch(s.system.constants, post, draws).gemm_eff_bf16)
    q5, q95 = np.percentile(c, [5, 95])
    width = hi - lo
    assert q5 == pytest.approx(lo, abs=0.05 * width) and q95 == pytest.approx(hi, abs=0.05 * width)
    # constants without an interval stay at the system's value
    assert np.all(np.asarray(U.constants_batch(s.system.constants, post, draws).hbm_eff)
                  == float(s.system.constants.hbm_eff))


def test_recorded_correlations_are_kept():
    table = ConstantsTable({"ampere": {"gemm_eff_bf16": 0.75, "hbm_eff": 0.85}},
                           {"ampere": {"gemm_eff_bf16": (0.72, 0.78), "hbm_eff": (0.8, 0.9)}},
                           "c.toml", {"correlation": {"ampere": {
                               "names": ["gemm_eff_bf16", "hbm_eff"],
                               "matrix": [[1.0, -0.8], [-0.8, 1.0]]}}})
    s = load_system("dgx-a100-selene", constants=table)
    post = U.posterior_of(s, model_form=False)
    assert set(post.correlations) == {"ampere"}
    draws = U.draw([post], 8192, seed=1)
    c = U.constants_batch(s.system.constants, post, draws)
    t1 = np.asarray(to_theta("gemm_eff_bf16", c.gemm_eff_bf16))
    t2 = np.asarray(to_theta("hbm_eff", c.hbm_eff))
    assert np.corrcoef(t1, t2)[0, 1] == pytest.approx(-0.8, abs=0.03)


def test_vmapped_samples_equal_one_by_one_evaluations(a100):
    import dataclasses
    from cpo_opt.analysis.evaluate import step_time_jit, structure_of_plan
    m, s, p = a100
    post = U.posterior_of(s)
    draws = U.draw([post], 6, seed=0, alternatives=("overlap_dp",))
    t, _ = U.sampled_step_times(m, [(s, p)], [post], draws, model_form=False)
    batch = U.constants_batch(s.system.constants, post, draws)
    for i in range(draws.n):
        c = type(batch)(**{f.name: getattr(batch, f.name)[i]
                           for f in dataclasses.fields(batch)})
        plan = dataclasses.replace(p.plan, overlap_dp=float(draws.alt["overlap_dp"][i]))
        one = step_time_jit(m.model, dataclasses.replace(s.system, constants=c), plan,
                            structure=structure_of_plan(m, p)).step_time_s
        assert t[0, i] == pytest.approx(float(one), rel=1e-12)


def test_model_form_term_sets_the_width_of_a_ratio(a100):
    """With exact constants (a file that sets them without intervals) and model-form sd s on
    each side, independent, log(speedup) has sd s * sqrt(2)."""
    m, s, p = a100
    exact = ConstantsTable({"ampere": {"gemm_eff_bf16": 0.73}}, {}, "exact.toml")
    se = load_system("dgx-a100-selene", constants=exact)
    d = U.speedup_distribution(m, (se, p), (se, p), samples=4096, model_form=0.05)
    lo, hi = d["interval"]
    sd = (math.log(hi) - math.log(lo)) / (2 * Z90)
    assert sd == pytest.approx(0.05 * math.sqrt(2), rel=0.06)
    assert d["probability_candidate_faster"] == pytest.approx(0.5, abs=0.03)


def test_zero_width_only_when_everything_is_exact(a100):
    m, s, p = a100
    exact = ConstantsTable({"ampere": {"gemm_eff_bf16": 0.73}}, {}, "exact.toml")
    se = load_system("dgx-a100-selene", constants=exact)
    d = U.speedup_distribution(m, (se, p), (se, p), samples=16, model_form=False)
    assert d["exact"] and d["interval"][0] == d["interval"][1] and "zero width" in d["note"]
    # the shipped fit's interval (ampere gemm) alone gives a width and no note
    d = U.speedup_distribution(m, (s, p), (s, p), samples=16, model_form=False)
    assert not d["exact"] and "note" not in d
    # one alternative alone is not exact either
    d = U.speedup_distribution(m, (se, p), (se, p), samples=16, model_form=False,
                               alternatives=("overlap_dp",))
    assert not d["exact"]


def test_choice_robustness_recounts_by_brute_force():
    rng = np.random.default_rng(0)
    t = 1.0 + 0.05 * rng.standard_normal((4, 500))
    r = U.choice_robustness(t, chosen=2)
    best = [min(range(4), key=lambda k: t[k, s]) for s in range(500)]
    assert r["best_changes_fraction"] == pytest.approx(sum(b != 2 for b in best) / 500)
    regret = [t[2, s] / min(t[k, s] for k in range(4)) - 1 for s in range(500)]
    assert r["expected_regret"] == pytest.approx(sum(regret) / 500)


@pytest.mark.slow  # compiles the interval's derivatives for two models (~30 s)
def test_a_constants_file_of_another_generation_warns_and_uses_the_shipped_intervals(tmp_path):
    """A Hopper-only file on GB200: set aside with a warning; the shipped Blackwell intervals
    are sampled."""
    f = tmp_path / "h.toml"
    f.write_text('generations = ["hopper"]\n[hopper]\nhbm_eff = { value = 0.8, low = 0.75, '
                 'high = 0.85, unit = "fraction" }\n')
    from cpo_opt.inputs.constants_file import read_constants
    s = load_system("gb200-nvl72", constants=read_constants(f))
    assert "covers hopper" in s.constants.note
    post = U.posterior_of(s)
    from cpo_opt.model import fitted
    want = {f"blackwell.{n}" for n in fitted.INTERVALS.get("blackwell", {})}
    assert set(post.names) == want
    r = cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", "tp=1,pp=8,ep=64,dtype=fp8",
                         constants=str(f))
    assert any("covers hopper" in w for w in r.to_dict()["warnings"])
    if want:
        assert r.to_dict()["step_time_interval_s"][0] < r.to_dict()["step_time_interval_s"][1]
    # on an A100 (where the shipped fit has an interval) the set-aside file leaves the shipped
    # interval, not a zero-width one: the step times of the exact model with gemm_eff_bf16 at
    # the ends of its shipped interval bracket the same range
    plan = "tp=8,pp=8,vpp=2,micro_batch=1,global_batch=1536"
    r = cpo_opt.evaluate("gpt3-175b", "dgx-a100-selene", plan, constants=str(f)).to_dict()
    assert any("covers hopper" in w for w in r["warnings"])
    lo, hi = r["step_time_interval_s"]
    ends = [cpo_opt.evaluate("gpt3-175b", "dgx-a100-selene", plan,
                             constants={"ampere": {"gemm_eff_bf16": e}}).to_dict()["step_time_s"]
            for e in fitted.INTERVALS["ampere"]["gemm_eff_bf16"]]
    assert lo < hi
    assert [lo, hi] == pytest.approx(sorted(ends), rel=0.01)


# --------------------------------------------------------------------------- compare
@pytest.fixture(scope="module")
def cmp_json():
    from cpo_opt.cli.main import main
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["compare", "--model", "gpt3-175b", "--system", "dgx-a100-selene",
                   "--against", "dgx-a100-selene", "--set-against", "scale_out.bandwidth_GB_s=100",
                   "--exhaustive", "--json", "--samples", "512"])
    assert rc == 0
    return json.loads(buf.getvalue())


def test_compare_json_has_interval_probability_and_power(cmp_json):
    r = cmp_json
    lo, hi = r["speedup_interval"]
    assert lo <= r["speedup_median"] <= hi
    p = r["probability_faster"]
    assert 0.0 <= p <= 1.0
    assert p + r["probability_candidate_faster"] == pytest.approx(1.0, abs=1e-9)
    # the direction: speedup = T_baseline / T_candidate > 1 means the candidate (--against)
    # is faster; probability_faster is P(--system faster) = P(speedup < 1)
    if lo > 1.0:
        assert p < 0.05
    power = r["interconnect_power_kW"]
    assert power["baseline"] == pytest.approx(r["baseline"]["interconnect_power_kW"])
    assert power["candidate"] == pytest.approx(r["candidate"]["interconnect_power_kW"])
    assert power["candidate"] > power["baseline"]  # 4x the scale-out bandwidth
    assert r["uncertainty"]["samples"] == 512 and not r["uncertainty"]["exact"]


def test_compare_probability_counts_the_sampled_speedups(a100):
    """P(baseline faster) is the share of sampled speedups below 1: recount it from the
    same draws, evaluated independently."""
    m, s, p = a100
    fast = load_system("dgx-a100-selene", overrides={"scale_out.bandwidth_GB_s": "26"})
    d = U.speedup_distribution(m, (s, p), (fast, p), samples=1024, seed=5)
    posts = [U.posterior_of(s), U.posterior_of(fast)]
    draws = U.draw(posts, 1024, 5)
    t, _ = U.sampled_step_times(m, [(s, p), (fast, p)], posts, draws)
    assert d["probability_baseline_faster"] == pytest.approx(np.mean(t[0] / t[1] < 1.0))
    assert 0.2 < d["probability_baseline_faster"] < 0.8  # a 4% faster link: not settled


def test_probability_is_settled_for_a_clearly_faster_design(a100):
    """A baseline with a fiftieth of the scale-out bandwidth is slower by far more than the
    sampled spread: the candidate wins in (nearly) every sample, and the interval, not zero
    width, lies above 1."""
    m, s, p = a100
    slow = load_system("dgx-a100-selene", overrides={"scale_out.bandwidth_GB_s": "0.5"})
    d = U.speedup_distribution(m, (slow, p), (s, p), samples=512, seed=2)
    lo, hi = d["interval"]
    assert 1.0 < lo < hi
    assert d["probability_candidate_faster"] > 0.99
    assert d["probability_baseline_faster"] < 0.01


def test_compare_text_prints_power_interval_and_probability(cmp_json):
    from cpo_opt.cli import text
    out = text.compare_table(cmp_json)
    assert "interconnect power" in out and "90% interval" in out and "P(" in out


def test_bad_samples_and_alternatives_are_bad_input(capsys):
    from cpo_opt.cli.main import main
    rc = main(["compare", "--model", "gpt3-175b", "--system", "dgx-a100-selene",
               "--against", "dgx-a100-selene", "--samples", "0"])
    assert rc == 2 and "--samples" in capsys.readouterr().err
    with pytest.raises(cpo_opt.InputError, match="alternatives"):
        U.draw([], 4, alternatives=("warp_speed",))


# --------------------------------------------------------------------------- transfer
DENSE = ("cpo_opt/data/dense-fit.toml", "cpo_opt/data/dense-published.toml")
TRANSFER_IDS = ("nemo2407-llama3-8b-h100-8", "nemo2407-llama2-70b-h100-64",
                "nemo2407-llama3-70b-h100-64", "mb2604-llama3-70b-gb200-fsdp-fp8",
                "mb2604-llama3-70b-gb200-mxfp8")
"""Three fp8 Hopper cases (the source) and two fp8 GB200 cases (the held-out target)."""


@pytest.mark.slow  # a fit (compiles the descent and the Hessian of five cases: ~1 min cold)
def test_transfer_recovers_a_known_shift_on_the_held_out_generation():
    """Synthetic cases: measured times are the model's own predictions with gemm_eff_fp8 moved
    by the same known logit shift from the shipped value on both generations. Fitting Hopper
    alone and transferring must find the GB200 value the data were made with, cut the
    held-out GB200 error, and give the target an interval wider than the source's."""
    import jax.numpy as jnp
    from cpo_opt.analysis import calibrate as C
    from cpo_opt.inputs import load_cases
    cases = [c for f in DENSE for c in load_cases(f) if c.id in TRANSFER_IDS]
    assert len(cases) == len(TRANSFER_IDS)
    names = ("gemm_eff_fp8",)
    batch = C.make_batch(cases)
    theta0 = C.prior_theta(batch, names)
    shift = -0.4
    truth = theta0 + shift
    logp = np.asarray(batch.functions(names).predict(jnp.asarray(truth)))
    cal = C.calibrate(cases, list(names), steps=300, measured=np.exp(logp),
                      prior_weight=1e-5, cross_validate=False, transfer="hopper:blackwell")
    tr = cal.report["transfer"]
    c = tr["constants"]["gemm_eff_fp8"]
    g_bw = batch.levels.index("blackwell")
    want = float(C.from_theta("gemm_eff_fp8", truth[g_bw, 0]))
    assert c["shift_theta"] == pytest.approx(shift, abs=0.02)
    assert c["value"] == pytest.approx(want, abs=0.005)
    assert c["low"] < want < c["high"]
    src = cal.report["levels"]["hopper"]["constants"]["gemm_eff_fp8"]
    assert c["high"] - c["low"] > src["high"] - src["low"]
    h = tr["held_out"]
    assert sorted(h["ids"]) == sorted(i for i in TRANSFER_IDS if "gb200" in i)
    assert h["before"]["mean_abs_error"] > 0.05  # the shift is visible before ...
    assert h["after"]["mean_abs_error"] < 0.01   # ... and gone after
    assert tuple(cal.table.generations) == ("blackwell", "hopper")
    assert cal.table["blackwell"]["gemm_eff_fp8"] == pytest.approx(c["value"])


def test_transfer_needs_two_generations_and_source_cases(capsys):
    from cpo_opt.analysis.calibrate import parse_transfer
    assert parse_transfer("hopper:blackwell") == ("hopper", "blackwell")
    for bad in ("hopper", "hopper:hopper", "hopper:volta", ":blackwell"):
        with pytest.raises(cpo_opt.InputError, match="transfer"):
            parse_transfer(bad)
    from cpo_opt.cli.main import main
    rc = main(["calibrate", "--cases", "cpo_opt/data/megatron-a100.toml",
               "--transfer", "hopper:blackwell"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "hopper" in err and "transfer" in err


def test_a_fit_of_another_generation_is_bad_input(capsys):
    """``--fit blackwell:...`` on Ampere cases constrains nothing: exit 2, one line."""
    from cpo_opt.cli.main import main
    rc = main(["calibrate", "--cases", "cpo_opt/data/megatron-a100.toml",
               "--fit", "blackwell:gemm_eff_bf16"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "constrain nothing" in err


def test_a_fit_the_cases_do_not_depend_on_is_bad_input(capsys):
    """No A100 case runs fp8, so ``--fit gemm_eff_fp8`` constrains nothing: exit 2, one
    line with the reason, and no file written."""
    import os
    import tempfile
    from cpo_opt.cli.main import main
    out = os.path.join(tempfile.mkdtemp(), "c.toml")
    rc = main(["calibrate", "--cases", "cpo_opt/data/megatron-a100.toml",
               "--fit", "gemm_eff_fp8", "--out", out])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "constrains nothing" in err and "depends on it" in err
    assert not os.path.exists(out)


# --------------------------------------------------------------------------- robust search
TINY_MODEL = {"layers": 4, "hidden": 1024, "heads": 16, "ffn_hidden": 4096, "vocab": 32000,
              "seq_len": 2048}
TINY_SYSTEM = {"gpu": {"preset": "A100-SXM-80GB"},
               "scale_up": {"domain_size": 8, "bandwidth_GB_s": 300.0, "latency_us": 1.0},
               "scale_out": {"bandwidth_GB_s": 25.0}, "cluster": {"gpus": 8}}


@pytest.fixture(scope="module")
def tiny_p90():
    """``optimize --objective p90 --exhaustive --samples 8`` on an 8-GPU, 4-layer case."""
    m, s = load_model(TINY_MODEL), load_system(TINY_SYSTEM)
    return m, s, cpo_opt.optimize(m, s, 64, exhaustive=True, objective="p90", samples=8,
                                  seed=0).to_dict()


def test_robust_exhaustive_optimum_is_the_brute_force_minimum(tiny_p90):
    """Every plan of the space evaluated one design at a time (``sampled_step_times``, not
    the search's vmapped row scorer) on the search's own draws: the plan the p90 search
    returns has the smallest 90th percentile, and its value is the search's objective."""
    from cpo_opt.inputs.loaders import plan_from_values
    from cpo_opt.search import lattice, make_space
    from cpo_opt.search.exhaustive import plan_columns
    m, s, r = tiny_p90
    space = make_space(m, s, 64, "bf16")
    cols = plan_columns(space)
    n = len(next(iter(cols.values())))
    assert 20 <= n <= 5000
    plans = [plan_from_values(lattice.plan_values(cols, i, "bf16", space.attention), m, s,
                              f"row {i}", space.stack, space.chosen) for i in range(n)]
    post = U.posterior_of(s)
    d = U.draw([post], 8, 0)
    d = U.Draws(d.n, d.z, np.repeat(d.eps[:1], n, 0), d.alt)
    times, fits = U.sampled_step_times(m, [(s, p) for p in plans], [post] * n, d)
    p90 = np.where(np.all(fits > 0.5, axis=1), np.quantile(times, 0.9, axis=1), np.inf)
    best = int(np.argmin(p90))
    assert r["objective_value_s"] == pytest.approx(p90[best], rel=1e-9)
    assert np.sum(p90 <= p90[best] * (1 + 1e-9)) >= 1
    chosen = plan_from_values(r["plan"], m, s, "chosen", space.stack, space.chosen)
    i = next(i for i, p in enumerate(plans) if p.values == chosen.values)
    assert p90[i] == pytest.approx(p90[best], rel=1e-9)
    # the point optimum is not scored by p90 here: its 90th percentile is no lower
    point = cpo_opt.optimize(m, s, 64, exhaustive=True).to_dict()
    j = next(i for i, p in enumerate(plans)
             if p.values == plan_from_values(point["plan"], m, s, "point", space.stack,
                                             space.chosen).values)
    assert p90[j] >= p90[best] * (1 - 1e-12)
    assert r["robustness"]["expected_regret"] >= 0.0


@pytest.mark.slow  # compiles the sampled relaxed descent (about a minute cold)
def test_robust_gradient_search_reaches_the_robust_exhaustive_optimum(tiny_p90):
    m, s, r = tiny_p90
    g = cpo_opt.optimize(m, s, 64, exhaustive=False, objective="p90", samples=8, seed=0,
                         starts=8, steps=40).to_dict()
    assert g["objective_value_s"] <= r["objective_value_s"] * 1.01
