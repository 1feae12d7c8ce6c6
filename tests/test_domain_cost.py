"""What a scale-up domain's size costs (issue 22, item 4): ports, switch chips, tiers, and the
co-design's domain trade.

Independent checks: the published NVL72 counts (18 NVLink ports per GPU, 18 switch chips per
rack), the forward power formula at the closed-form budget bandwidth, the two Passage
presets agreeing where their notes say they must, and the exact model's step times deciding
the domain trade (the chosen size moves when the per-port power or cost moves).
"""

import pytest

from cpo_opt.inputs.loaders import load_model, load_plan, load_system, system_with
from cpo_opt.model import fabric_cost
from cpo_opt.study.codesign import allowed_bandwidth, choose


def _at(system, **hw):
    return system_with(system, {f"scale_up.{k}": float(v) for k, v in hw.items()})


def test_nvl72_counts_match_the_published_rack():
    """GB200 NVL72: each GPU has 18 NVLink5 links, one to each of 18 NVLink Switch chips
    (NVIDIA GB200 NVL72 product page; reference/study.md)."""
    r = fabric_cost.report(load_system("gb200-nvl72").system)
    assert r["ports_per_gpu"] == pytest.approx(18.0)
    assert r["switch_chips_per_domain_whole"] == 18
    assert r["switch_tiers"] == 1


def test_ports_are_flat_to_the_knee_then_grow_with_the_domain():
    s = load_system("study-passage")  # 12.8 TB/s chips, 100 GB/s fibres: knee at 128 GPUs
    ports = {d: fabric_cost.report(_at(s, domain_size=d).system)["ports_per_gpu"]
             for d in (32, 64, 128, 256, 512, 1024)}
    assert ports[32] == ports[64] == ports[128] == pytest.approx(20.0)
    assert ports[256] == pytest.approx(2 * ports[128])
    assert ports[1024] == pytest.approx(2 * ports[512]) == pytest.approx(160.0)


def test_fixed_port_power_makes_power_grow_with_the_domain_only_past_the_knee():
    s = load_system("study-passage-laser")
    p = {d: float(fabric_cost.interconnect_power_w(_at(s, domain_size=d).system))
         for d in (64, 128, 256, 512)}
    assert p[64] == pytest.approx(p[128])
    assert p[128] < p[256] < p[512]
    # without a fixed port power the domain size is free below the radix
    q = {d: float(fabric_cost.interconnect_power_w(_at(load_system("study-passage"),
                                                       domain_size=d).system))
         for d in (64, 512, 1024)}
    assert q[64] == pytest.approx(q[512]) == pytest.approx(q[1024])


def test_the_laser_reading_equals_the_paper_figure_at_full_fibres():
    """study-passage-laser splits 4.3 pJ/bit into 3.2 per bit and 1.1 per bit of a full
    fibre as a fixed power: where fibres are full (domains up to the knee) both presets draw
    the same power."""
    a = _at(load_system("study-passage"), domain_size=128)
    b = _at(load_system("study-passage-laser"), domain_size=128)
    assert float(fabric_cost.interconnect_power_w(a.system)) == pytest.approx(
        float(fabric_cost.interconnect_power_w(b.system)), rel=1e-9)


@pytest.mark.parametrize("domain", [64, 256, 512, 1024])
def test_budget_bandwidth_spends_exactly_the_budget(domain):
    s = load_system("study-passage-laser")
    budget = 3.5e6
    bw, binding, caps = allowed_bandwidth(s, domain, budget)
    assert binding == "power"
    at = _at(s, domain_size=domain, bandwidth_GB_s=bw)
    assert float(fabric_cost.interconnect_power_w(at.system)) == pytest.approx(budget, rel=1e-9)
    # the cost budget the same way, with a priced port and switch
    c = load_system("study-passage-laser", overrides={"scale_up.port_cost_USD": "300",
                                                      "scale_up.switch_cost_USD": "20000"})
    bw_c, binding_c, _ = allowed_bandwidth(c, domain, None, cost_budget=5e8)
    assert binding_c == "cost"
    at = _at(c, domain_size=domain, bandwidth_GB_s=bw_c)
    assert float(fabric_cost.scale_up_cost(at.system)) == pytest.approx(5e8, rel=1e-9)


def _trade(overrides, budget_w=None, cost_budget=None):
    """The domain trade of config4 at a fixed plan (tp 2, cp 4, ep 512): each domain at the
    bandwidth the limits leave, timed by the exact model."""
    from cpo_opt.analysis.evaluate import evaluate
    m = load_model("config4")
    s = load_system("study-passage-laser", overrides=overrides)
    rows = []
    for d in (128, 256, 512, 1024):
        bw, binding, _ = allowed_bandwidth(s, d, budget_w, cost_budget, bound=12500)
        at = _at(s, domain_size=d, bandwidth_GB_s=bw * (1 - 1e-9))
        plan = load_plan("tp=2,cp=4,pp=1,ep=512,dtype=fp8,global_batch=2304", m, at)
        rows.append({"domain_size": d, "bandwidth_GB_s": bw, "binding": binding,
                     "feasible": True, "step_time_s": evaluate(m, at, plan)["step_time_s"]})
    return choose(rows)


def test_the_chosen_domain_moves_with_the_port_power():
    budget = float(fabric_cost.interconnect_power_w(load_system("study-copper").system))
    free, why_free = _trade({"scale_up.port_power_W": "0"}, budget)
    priced, why_priced = _trade({"scale_up.port_power_W": "1.76"}, budget)
    # free ports: the domain grows at least until the expert group fits (512; past it the
    # model still gains a little from one all-to-all island: 1024 by 0.7% after the physics
    # merge); priced ports: larger domains' narrower ports eat the budget
    assert free["domain_size"] >= 512 and why_free in ("time", "radix")
    assert priced["domain_size"] < free["domain_size"] and why_priced == "power"


def test_the_chosen_domain_moves_with_the_port_cost():
    cheap, _ = _trade({"scale_up.port_power_W": "0", "scale_up.port_cost_USD": "10"},
                      cost_budget=2e8)
    dear, why = _trade({"scale_up.port_power_W": "0", "scale_up.port_cost_USD": "1000"},
                       cost_budget=2e8)
    assert dear["domain_size"] < cheap["domain_size"] and why == "cost"
