"""The architect's what-if workflow (issue 15): each friction point, one test."""

import json

import pytest

import cpo_opt
from cpo_opt.cli.main import main


def run_cli(capsys, *argv):
    """``(exit status, stdout, stderr)`` of one in-process command."""
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- 1. infeasible
def test_domain_beyond_reach_is_an_answer(capsys):
    rc, out, err = run_cli(capsys, "optimize", "--model", "deepseek-v3", "--system",
                           "gb200-nvl72", "--set", "scale_up.domain_size=512")
    assert rc == 2 and out == ""
    line, = err.strip().splitlines()
    assert "domain_size 512 > max_domain_size 72" in line
    assert "raise scale_up.max_domain_size" in line and "switch_radix" in line
    assert "internal error" not in line


def test_tiny_power_budget_is_an_answer(capsys):
    # a budget caps the hardware the search chooses, so it comes with --free (issue 13)
    rc, out, err = run_cli(capsys, "optimize", "--model", "deepseek-v3", "--system",
                           "gb200-nvl72", "--free", "scale_up.bandwidth_GB_s",
                           "--power-budget-kW", "50", "--json")
    assert rc == 2 and out == ""
    line, = err.strip().splitlines()
    assert "> budget 50 kW" in line and "--power-budget-kW" in line


def test_infeasible_names_the_power_needed():
    from cpo_opt.analysis.optimize import InfeasibleError
    with pytest.raises(InfeasibleError) as e:
        cpo_opt.optimize("deepseek-v3", "gb200-nvl72", power_budget_kW=50,
                         free=["scale_up.bandwidth_GB_s"])
    assert e.value.limit == "power" and e.value.needed > 50
    # the number it names is enough: at that budget the limit no longer binds
    with pytest.raises(InfeasibleError) as e2:
        cpo_opt.optimize("deepseek-v3", "gb200-nvl72", power_budget_kW=e.value.needed * 0.99,
                         free=["scale_up.bandwidth_GB_s"])
    assert e2.value.limit == "power"


# --------------------------------------------------------------------------- 2. round trip
@pytest.fixture(scope="module")
def best_gpt():
    return cpo_opt.optimize("gpt3-175b", "dgx-a100-selene", exhaustive=True)


def test_plan_arg_reproduces_step_time_exactly(best_gpt):
    again = cpo_opt.evaluate("gpt3-175b", "dgx-a100-selene", best_gpt.plan_arg)
    assert again.step_time_s == best_gpt.step_time_s
    assert best_gpt.plan_arg == best_gpt["plan_arg"]


def test_printed_plan_line_is_accepted(best_gpt):
    from cpo_opt.cli.text import plan_line
    line = plan_line(best_gpt.plan)
    assert "microbatches=" in line and " dp=" in line
    again = cpo_opt.evaluate("gpt3-175b", "dgx-a100-selene", line)
    assert again.step_time_s == pytest.approx(best_gpt.step_time_s, rel=1e-12)


def test_wrong_derived_value_in_plan_is_named(capsys):
    rc, out, err = run_cli(capsys, "evaluate", "--model", "gpt3-175b", "--system",
                           "dgx-a100-selene", "--plan", "tp=8 pp=16 dp=24 microbatches=7")
    assert rc == 2 and "plan.microbatches" in err and "derived" in err


def test_default_global_batch_agrees(best_gpt):
    """evaluate without global_batch picks the batch optimize used (one rule)."""
    arg = ",".join(p for p in best_gpt.plan_arg.split(",") if not p.startswith("global_batch"))
    again = cpo_opt.evaluate("gpt3-175b", "dgx-a100-selene", arg)
    assert again.plan["global_batch"] == best_gpt["global_batch"]
    assert again.step_time_s == best_gpt.step_time_s


def test_sensitivity_without_plan_optimizes_first():
    r = cpo_opt.sensitivity("gpt3-175b", "dgx-a100-selene")
    assert r["plan_source"]["optimized"] is True
    plan = r["plan_source"]["plan_arg"]
    direct = cpo_opt.sensitivity("gpt3-175b", "dgx-a100-selene", plan)
    assert direct.step_time_s == r.step_time_s
    assert direct["plan_source"]["optimized"] is False


# --------------------------------------------------------------------------- 3. compare
@pytest.fixture(scope="module")
def cmp_gpt():
    return cpo_opt.compare("gpt3-175b", "dgx-a100-selene", "dgx-a100-selene", tokens=300e9,
                           exhaustive=True,
                           against_overrides={"scale_out.bandwidth_GB_s": "100"})


def test_compare_speedups_are_ratios_of_the_optima(cmp_gpt):
    r = cmp_gpt.to_dict()
    a, b = r["baseline"], r["candidate"]
    assert a["method"] == b["method"] == "exhaustive"
    days = a["result"]["time_to_train_days"] / b["result"]["time_to_train_days"]
    assert r["speedup"] == pytest.approx(days, rel=1e-12)
    same = r["baseline_plan_on_candidate"]
    assert same["plan"]["tp"] == a["plan"]["tp"] and same["plan"]["pp"] == a["plan"]["pp"]
    assert r["speedup_same_plan"] == pytest.approx(
        a["step_time_s"] / same["step_time_s"], rel=1e-12)
    assert r["speedup_same_plan"] * r["speedup_plan_reoptimized"] == pytest.approx(r["speedup"])
    # the candidate's optimum is at least as good as the baseline plan run there
    assert r["speedup_plan_reoptimized"] >= 1 - 1e-12
    for k, v in r["breakdown_s"].items():
        assert v["difference"] == pytest.approx(b["result"]["breakdown_s"][k]
                                                - a["result"]["breakdown_s"][k])
    assert f"{r['speedup']:.2f}x" in r["why"][0]
    assert cmp_gpt.speedup == r["speedup"] and cmp_gpt.why == r["why"]


@pytest.mark.slow  # two more exhaustive searches, one on another system (H100)
def test_compare_cli_json_shape(capsys):
    rc, out, err = run_cli(capsys, "compare", "--model", "gpt3-175b", "--system",
                           "dgx-a100-selene", "--against", "dgx-h100", "--exhaustive", "--json")
    assert rc == 0, err
    r = json.loads(out)
    for k in ("baseline", "candidate", "speedup", "speedup_same_plan", "why"):
        assert k in r
    # 12 = tp*cp*pp of the A100 optimum does not divide 16384 H100s: said, not crashed
    if r["speedup_same_plan"] is None:
        assert "must divide" in r["baseline_plan_on_candidate_error"]


def test_study_explanation_uses_the_shared_code():
    from cpo_opt.analysis import explain as shared
    from cpo_opt.study import explain as study
    assert study.placement is shared.placement


# --------------------------------------------------------------------------- 4. inspect
def test_presets_show_has_content_and_sources(capsys):
    rc, out, err = run_cli(capsys, "presets", "show", "GB200-NVL72", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["kind"] == "system" and r["name"] == "gb200-nvl72"
    assert r["content"]["scale_up"]["domain_size"] == 72 and r["sources"]
    assert r["resolved"]["gpu"]["hbm_GB"] > 0  # defaults and the GPU preset filled in
    rc, out, err = run_cli(capsys, "presets", "show", "gb200-nvl7")
    assert rc == 2 and "did you mean 'gb200-nvl72'" in err


def test_preset_names_case_insensitive_and_did_you_mean():
    assert cpo_opt.load_system("GB200-NVL72").name == "gb200-nvl72"
    with pytest.raises(cpo_opt.InputError, match="did you mean 'deepseek-v3'"):
        cpo_opt.load_model("deepseek-v4")


def test_overrides_are_echoed_and_odd_setups_warned(capsys):
    rc, out, err = run_cli(capsys, "evaluate", "--model", "deepseek-v3", "--system",
                           "gb200-nvl72", "--plan", "tp=1,pp=8,ep=64,dtype=fp8", "--set",
                           "cluster.gpus=4096", "--json")
    assert rc == 0, err
    r = json.loads(out)
    assert r["overrides"] == {"cluster.gpus": "4096"}
    assert r["system_effective"]["values"]["cluster"]["gpus"] == 4096
    assert any("not a whole number" in w for w in r["warnings"])
    assert "fp8" in r["mfu_basis"]
    rc, out, err = run_cli(capsys, "evaluate", "--model", "deepseek-v3", "--system",
                           "gb200-nvl72", "--plan", "tp=1,pp=8,ep=64,dtype=fp8", "--set",
                           "cluster.gpus=4096")
    assert "with overrides cluster.gpus=4096" in out and "warning: " in err
    assert "share of step" in out


def test_copper_reach_lifted_is_warned():
    r = cpo_opt.evaluate("gpt3-175b", "dgx-a100-selene", "tp=8,pp=8",
                         overrides={"scale_up.domain_size": "64",
                                    "scale_up.max_domain_size": "64",
                                    "scale_up.switch_radix": "64"})
    assert any("8-GPU reach of dgx-a100-selene" in w for w in r["warnings"])
    plain = cpo_opt.evaluate("gpt3-175b", "dgx-a100-selene", "tp=8,pp=8")
    assert plain["warnings"] == [] and plain["overrides"] == {}


def test_scenario_fills_model_system_batch_tokens():
    r = cpo_opt.evaluate(scenario="deepseek-v3-h800-2048")
    assert r["scenario"] == "deepseek-v3-h800-2048" and "time_to_train_days" in r
    sc = cpo_opt.load_scenario("deepseek-v3-h800-2048")
    assert r.plan["global_batch"] == sc.plan.values["global_batch"]
    over = cpo_opt.evaluate(scenario="deepseek-v3-h800-2048",
                            overrides={"scale_out.bandwidth_GB_s": "100"})
    assert over["system_effective"]["values"]["scale_out"]["bandwidth_GB_s"] == 100
    assert over.step_time_s < r.step_time_s


def test_scenario_flag_on_the_command_line(capsys):
    rc, out, err = run_cli(capsys, "evaluate", "--scenario", "deepseek-v3-h800-2048", "--json")
    assert rc == 0, err
    assert json.loads(out)["scenario"] == "deepseek-v3-h800-2048"
    rc, out, err = run_cli(capsys, "evaluate", "--plan", "tp=1")
    assert rc == 2 and "--model" in err and "--scenario" in err


# --------------------------------------------------------------------------- 5. co-design cost
def test_second_tier_costs_power_with_finite_gradients(presets):
    import jax
    from cpo_opt.inputs import schema
    from cpo_opt.model import fabric_cost
    _, s, _ = presets("gpt3-175b", "dgx-a100-selene")
    base = float(fabric_cost.interconnect_power_w(s.system))
    big = schema.with_fields(s.system, ("scale_up.domain_size",), [16.0])
    up = 2 * 8 * float(s.system.scale_up.bandwidth * s.system.scale_up.energy_j_per_bit) \
        * float(s.system.gpus)
    assert float(fabric_cost.switch_stages(big)) == 3.0
    assert float(fabric_cost.interconnect_power_w(big)) == pytest.approx(base + 2 * up)
    assert float(fabric_cost.switch_chips_per_domain(big)) == pytest.approx(
        3 * float(fabric_cost.switches_per_domain(big)))

    def power(d):
        return fabric_cost.interconnect_power_w(
            schema.with_fields(s.system, ("scale_up.domain_size",), [d]))
    for d in (4.0, 8.0, 8.04, 8.5, 64.0):
        g = float(jax.grad(power)(d))
        assert g == g and abs(g) < float("inf")
    # inside the ramp the gradient matches a finite difference
    h = 1e-4
    assert float(jax.grad(power)(8.04)) == pytest.approx(
        (float(power(8.04 + h)) - float(power(8.04 - h))) / (2 * h), rel=1e-6)


@pytest.fixture(scope="module")
def codesign_gpt():
    return cpo_opt.optimize("gpt3-175b", "dgx-a100-selene", exhaustive=True,
                            free=["scale_up.domain_size"],
                            overrides={"scale_up.max_domain_size": "256",
                                       "scale_up.switch_radix": "256"})


@pytest.mark.slow  # an exhaustive search over plans x domain sizes, then the trim's evaluations
def test_codesign_stops_at_the_smallest_domain_that_earns_its_cost(codesign_gpt, presets):
    from cpo_opt.analysis.optimize import domain_candidates
    r = codesign_gpt
    trim = r["domain_trim"]
    d = r.hardware["scale_up.domain_size"]
    assert d == trim["chosen_domain_size"] <= trim["searched_domain_size"]
    assert r.step_time_s <= trim["step_time_searched_s"] * (1 + trim["tolerance"])
    # every smaller whole-domain size with the same plan is slower by more than the tolerance
    # (or the plan does not fit / is not valid there)
    for smaller in domain_candidates(3072, 1, d - 1):
        try:
            e = cpo_opt.evaluate("gpt3-175b", "dgx-a100-selene", r.plan_arg, overrides={
                "scale_up.max_domain_size": "256", "scale_up.switch_radix": "256",
                "scale_up.domain_size": str(smaller)})
        except cpo_opt.InputError:
            continue
        if e.fits_memory:
            assert e.step_time_s > trim["step_time_searched_s"] * (1 + trim["tolerance"])


@pytest.mark.slow  # two exhaustive searches over plans x scale-up bandwidths (one per budget)
def test_power_reported_against_budget_and_swept(capsys):
    rc, out, err = run_cli(capsys, "optimize", "--model", "gpt3-175b", "--system",
                           "dgx-a100-selene", "--free", "scale_up.bandwidth_GB_s",
                           "--exhaustive", "--power-budget-kW", "25", "150", "--json")
    assert rc == 0, err
    r = json.loads(out)
    low, high = r["sweep"]
    assert low["feasible"] is False and "--power-budget-kW" in low["reason"]
    assert high["feasible"] is True
    fab = high["fabric"]
    assert fab["power_budget_kW"] == 150
    assert fab["interconnect_power_kW"] <= 150 * (1 + 1e-9)
    assert fab["power_share_of_budget"] == pytest.approx(fab["interconnect_power_kW"] / 150)
    from cpo_opt.cli import text
    table = text.sweep_table(r)
    assert "budget kW" in table and "infeasible" in table and "150" in table


# --------------------------------------------------------------------------- 6. presentation
def test_sweep_plot_ticks_at_the_data(tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cpo_opt.study import plots
    fig, ax = plt.subplots()
    ax.plot([72, 576, 800], [3, 2, 1.9])
    ax.set_xscale("log")
    plots._data_ticks(ax, [72, 576, 800])
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["72", "576", "800"]
    assert ax.xaxis.get_minor_ticks() == [] or not any(
        t.label1.get_text() for t in ax.xaxis.get_minor_ticks())
    plt.close(fig)
    obj = {"knees": [{"config": "c1", "sweep": "domain", "knee": None}],
           "sweeps": [{"sweep": "domain", "config": "c1", "value": v, "time_to_train_days": d}
                      for v, d in ((72, 3.0), (576, 2.0), (800, 1.9))]}
    plots.sweep(obj, "domain", tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 0
    assert plots.LABELS["ep_comm"] != "ep_comm"


def test_presets_table_is_narrow_and_left_aligned(capsys):
    rc, out, err = run_cli(capsys, "presets")
    assert rc == 0
    lines = out.splitlines()
    assert max(len(ln) for ln in lines) <= 100
    names = [ln for ln in lines if ln.startswith("  gb200-nvl72")]
    assert names and names[0].startswith("  gb200-nvl72  ")


# --------------------------------------------------------------------------- 7. own runs
def test_validation_case_may_name_presets_with_overrides(tmp_path):
    cases = tmp_path / "runs.toml"
    cases.write_text('''
[[case]]
id = "my-gpt3-run"
source = "our cluster, 2026-11"
model = "gpt3-175b"
system = "DGX-A100-Selene"
overrides = { cluster.gpus = 1536, "scale_out.bandwidth_GB_s" = 50.0 }
plan = { tp = 8, pp = 16, micro_batch = 1, global_batch = 1536, recompute = "none" }
measured = { step_time_s = 30.0 }

[[case]]
id = "inline"
model = { layers = 4, hidden = 1024, heads = 16, ffn_hidden = 4096, vocab = 32000, seq_len = 2048 }
system = { gpu = { preset = "H100-SXM" }, scale_up = { domain_size = 8, bandwidth_GB_s = 450.0 }, scale_out = { bandwidth_GB_s = 50.0 }, cluster = { gpus = 8 } }
plan = { tp = 8, pp = 1, global_batch = 8 }
measured = { step_time_s = 0.1 }
''')
    r = cpo_opt.validate(str(cases))
    assert [c["id"] for c in r.cases] == ["my-gpt3-run", "inline"]
    same = cpo_opt.evaluate("gpt3-175b", "dgx-a100-selene",
                            "tp=8,pp=16,micro_batch=1,global_batch=1536,recompute=none",
                            overrides={"cluster.gpus": "1536", "scale_out.bandwidth_GB_s": "50"})
    assert r.cases[0]["predicted_step_time_s"] == pytest.approx(same.step_time_s, rel=1e-12)
    bad = tmp_path / "bad.toml"
    bad.write_text(cases.read_text().replace("cluster.gpus = 1536", "cluster.gpuz = 1536"))
    with pytest.raises(cpo_opt.InputError) as e:
        cpo_opt.validate(str(bad))
    line = str(e.value)
    assert "'my-gpt3-run'" in line and "overrides" in line and "gpuz" in line
    worse = tmp_path / "worse.toml"
    worse.write_text(cases.read_text().replace('"gpt3-175b"', '"gpt3-175"'))
    with pytest.raises(cpo_opt.InputError, match="did you mean 'gpt3-175b'"):
        cpo_opt.validate(str(worse))


def test_compare_names_the_infeasible_side(capsys):
    rc, out, err = run_cli(capsys, "compare", "--model", "gpt3-175b", "--system",
                           "dgx-a100-selene", "--against", "dgx-a100-selene", "--set-against",
                           "scale_up.domain_size=16", "--exhaustive")
    assert rc == 2
    line, = err.strip().splitlines()
    assert line.startswith("candidate dgx-a100-selene: infeasible: domain_size 16")


def test_every_text_table_renders(capsys, cmp_gpt):
    from cpo_opt.cli import text
    rc, out, err = run_cli(capsys, "optimize", "--model", "gpt3-175b", "--system",
                           "dgx-a100-selene", "--exhaustive")
    assert rc == 0, err
    assert "microbatches=" in out and "--plan     tp=" in out and "MFU" in out
    plan = next(ln for ln in out.splitlines() if ln.startswith("--plan"))[len("--plan"):]
    rc, out2, err = run_cli(capsys, "evaluate", "--model", "gpt3-175b", "--system",
                            "dgx-a100-selene", "--plan", plan.strip())
    assert rc == 0, err
    c = text.compare_table(cmp_gpt.to_dict())
    assert "speedup" in c and "why:" in c and "base plan on cand." in c
    s = cpo_opt.sensitivity("gpt3-175b", "dgx-a100-selene", "gpt3-175b-1536")
    assert "elasticity" in text.sensitivity_table(s.to_dict())
    assert "sources:" in text.preset_show(cpo_opt.api.preset_show("deepseek-v3"))


def test_explanation_places_groups_as_the_plan_does():
    """The "why" sentences use the plan's own placement: EP 64 aligned in 72-GPU domains (64
    used, 8 idle) fits in one domain; laid out contiguously the worst group straddles two."""
    from cpo_opt.analysis import explain
    from cpo_opt.inputs.loaders import load_system
    system = load_system("gb200-nvl72")
    plan = {"tp": 1, "cp": 1, "pp": 3, "dp": 3072, "ep": 64, "etp": 1, "edp": 48}
    aligned = explain.placement(dict(plan, placement="aligned"), system)["ep"]
    contiguous = explain.placement(dict(plan, placement="contiguous"), system)["ep"]
    assert aligned["fits_in_domain"] and aligned["scale_out_share"] == 0.0
    assert not contiguous["fits_in_domain"] and contiguous["members_per_domain"] < 64
