"""Time to train against provisioned interconnect power: co-design of the Passage fabric.

Measures: for one config, under each power budget (a multiple of the copper fabric's
provisioned interconnect power), the best scale-up domain size, per-GPU bandwidth and plan
(joint gradient search, then the budget fill), with the power drawn and time to train; and
the copper and Passage presets for comparison.

    python experiments/pareto.py --config config4 --fractions 0.3 0.45 0.7 1.0 1.5
"""

import argparse
import dataclasses

from cpo_opt.runtime import setup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="config4", help="study workload (config1..config4)")
    p.add_argument("--fractions", type=float, nargs="+", default=None,
                   help="budgets as multiples of the copper interconnect power "
                        "(default: the study's)")
    p.add_argument("--mode", choices=["full", "quick", "tiny"], default="quick",
                   help="search effort")
    args = p.parse_args()
    setup()
    from cpo_opt.study import load_study
    from cpo_opt.study.codesign import pareto
    from cpo_opt.study.headline import optimum
    study = load_study(args.mode)
    fr = tuple(args.fractions or study.assumptions["pareto_budget_fractions"]["value"])
    study = dataclasses.replace(study, mode=dataclasses.replace(study.mode,
                                                                pareto_budget_fractions=fr))
    head = {f: optimum(study, args.config, f) for f in ("copper", "passage")}
    res = pareto(study, args.config, head)
    print(f"{args.config}: time to train vs interconnect power (copper fabric "
          f"{res['copper_power_kW']:.0f} kW)")
    print(f"{'point':>14} {'budget kW':>10} {'power kW':>9} {'days':>7} {'GB/s':>7} "
          f"{'domain':>7}  front")
    for q in res["points"]:
        days = q["time_to_train_days"]
        print(f"{q['budget_fraction_of_copper']:>13g}x {q['budget_kW']:>10.0f} "
              f"{q['power_kW'] or 0:>9.0f} {days or float('nan'):>7.2f} "
              f"{q['bandwidth_GB_s'] or 0:>7.0f} {q['domain_size'] or 0:>7.0f}  "
              f"{q['on_front']}")
    for q in res["presets"]:
        print(f"{'preset ' + q['name']:>14} {'':>10} {q['power_kW']:>9.0f} "
              f"{q['time_to_train_days']:>7.2f} {q['bandwidth_GB_s']:>7.0f} "
              f"{q['domain_size']:>7.0f}")


if __name__ == "__main__":
    main()
