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
    rc, out, err = run_cli(capsys, "optimize", "--model", "deepseek-v3", "--system",
                           "gb200-nvl72", "--power-budget-kW", "50", "--json")
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
