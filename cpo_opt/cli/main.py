"""The ``cpo-opt`` command line (contract: SPEC.md section 2).

Exit status: 0 done, 2 bad input (one line on stderr naming the file, key and rule), 1 internal
failure (one line; set ``CPO_OPT_DEBUG=1`` for the traceback). With ``--json`` standard output is
exactly one JSON object; progress and warnings go to standard error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable

from cpo_opt import runtime
from cpo_opt.inputs import ArgumentError, InputError

FLAGS = {"power_budget_kW": "--power-budget-kW"}
"""Library argument -> flag where the flag is not ``--`` + the name with dashes."""

TOKEN_SUFFIXES = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


class UsageError(Exception):
    """A bad command-line flag (exit 2, one line)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        raise UsageError(f"{self.prog}: {message}")


def parse_count(text: str, flag: str) -> float:
    """``"15e12"``, ``"15T"``, ``"450B"`` -> float > 0; else :class:`UsageError`."""
    t = text.strip()
    scale = 1.0
    if t and t[-1].upper() in TOKEN_SUFFIXES:
        scale, t = TOKEN_SUFFIXES[t[-1].upper()], t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        raise UsageError(f"{flag}: must be a positive number such as 15e12 or 15T "
                         f"(got {text!r})") from None
    if not value > 0 or value != value or value == float("inf"):
        raise UsageError(f"{flag}: must be a positive number (got {text!r})")
    return value


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``--set section.key=value`` items -> ``{"section.key": "value"}``."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"--set: expected section.key=value (got {item!r})")
        k, v = item.split("=", 1)
        if not k.strip() or not v.strip():
            raise UsageError(f"--set: expected section.key=value (got {item!r})")
        out[k.strip()] = v.strip()
    return out


# --------------------------------------------------------------------------- output helpers
def emit(obj: dict[str, Any], as_json: bool, text: Callable[[dict], str]) -> None:
    """Print ``obj`` as one JSON object, or as the readable text ``text(obj)``."""
    if as_json:
        sys.stdout.write(json.dumps(obj, indent=1, default=_json_default) + "\n")
    else:
        sys.stdout.write(text(obj).rstrip() + "\n")


def _json_default(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


# --------------------------------------------------------------------------- commands
def cmd_presets(args) -> None:
    from cpo_opt.inputs.loaders import list_presets
    from cpo_opt.cli import text
    found = list_presets()
    emit({k: [{"name": n, "description": d} for n, d in v] for k, v in found.items()},
         args.json, text.presets_table)


def _tokens(args) -> float | None:
    return parse_count(args.tokens, "--tokens") if getattr(args, "tokens", None) else None


def cmd_evaluate(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    r = api.evaluate(args.model, args.system, args.plan, _tokens(args),
                     overrides=parse_sets(args.set), constants=args.constants)
    emit(r.to_dict(), args.json, text.evaluate_table)


def cmd_validate(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    emit(api.validate(args.cases, constants=args.constants).to_dict(), args.json,
         text.validate_table)


def cmd_calibrate(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    r = api.calibrate(args.cases, args.fit or None, out=args.out, constants=args.constants,
                      steps=args.steps, hold_out=tuple(args.hold_out))
    emit(r.to_dict(), args.json, text.calibrate_table)


def cmd_bench(args) -> None:
    from cpo_opt import api
    from cpo_opt.analysis.bench import bench
    from cpo_opt.cli import text
    if args.n < 1 or args.batch < 1:
        raise UsageError("--n and --batch must be >= 1")
    model, system, _ = api.load_inputs(args.model, args.system, None, parse_sets(args.set))
    emit(bench(model, system, n=args.n, batch=args.batch, dtype=args.dtype, seed=args.seed),
         args.json, text.bench_table)


def cmd_optimize(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    r = api.optimize(args.model, args.system, args.global_batch, exhaustive=args.exhaustive,
                     free=tuple(args.free), power_budget_kW=args.power_budget_kw,
                     dtype=args.dtype, starts=args.starts, steps=args.steps, seed=args.seed,
                     tokens=_tokens(args), overrides=parse_sets(args.set),
                     progress=sys.stderr.isatty() and not args.json, constants=args.constants)
    emit(r.to_dict(), args.json, text.optimize_table)


def cmd_sensitivity(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    r = api.sensitivity(args.model, args.system, args.plan, _tokens(args),
                        overrides=parse_sets(args.set), constants=args.constants)
    emit(r.to_dict(), args.json, text.sensitivity_table)


def cmd_reproduce(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    r = api.reproduce(quick=args.quick, out_dir=args.out, progress=not args.no_progress,
                      constants=args.constants)
    emit(r.to_dict(), args.json, text.reproduce_table)


# --------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cpo-opt", description=(
        "Step time, best parallel plan and hardware co-design for LLM / MoE training on a "
        "two-tier GPU fabric (scale-up domain + scale-out network)."))
    from cpo_opt import __version__
    p.add_argument("--version", action="version", version=f"cpo-opt {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name, fn, help_):
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.add_argument("--json", action="store_true", help="print exactly one JSON object")
        sp.set_defaults(fn=fn)
        return sp

    def msp(sp, plan=False):
        sp.add_argument("--model", required=True, help="model file (.toml/.json) or preset")
        sp.add_argument("--system", required=True, help="system file or preset")
        if plan:
            sp.add_argument("--plan", required=True,
                            help="plan file, preset, or inline 'tp=8,pp=16,ep=64'")
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override a system field, e.g. scale_up.bandwidth_GB_s=1800 "
                             "(repeatable)")
        constants_flag(sp)

    def constants_flag(sp):
        sp.add_argument("--constants", metavar="FILE",
                        help="constants file (written by calibrate) replacing the shipped "
                             "efficiency constants")

    add("presets", cmd_presets, "list shipped models, systems, GPUs, plans and scenarios")

    sp = add("evaluate", cmd_evaluate, "one step-time evaluation")
    msp(sp, plan=True)
    sp.add_argument("--tokens", help="training tokens (e.g. 15e12 or 15T): adds time to train")

    sp = add("optimize", cmd_optimize, "best plan (and hardware values with --free)")
    msp(sp)
    sp.add_argument("--global-batch", type=int,
                    help="sequences per step (default: the smallest multiple of the GPU count "
                         "with >= 4M tokens)")
    sp.add_argument("--exhaustive", action="store_true",
                    help="enumerate every valid plan and score all (ground truth)")
    sp.add_argument("--free", nargs="+", metavar="KEY", default=[],
                    help="continuous system fields to optimize too, e.g. "
                         "scale_up.bandwidth_GB_s scale_up.domain_size")
    sp.add_argument("--tokens", help="training tokens: reports time to train")
    sp.add_argument("--power-budget-kW", type=float, dest="power_budget_kw",
                    help="cap on provisioned interconnect power of the cluster, kW (with --free)")
    sp.add_argument("--dtype", choices=["bf16", "fp8"], default="bf16")
    sp.add_argument("--starts", type=int, default=32, help="gradient search: random starts")
    sp.add_argument("--steps", type=int, default=150, help="gradient search: Adam steps")
    sp.add_argument("--seed", type=int, default=0)

    sp = add("sensitivity", cmd_sensitivity,
             "gradients and elasticities of step time w.r.t. every continuous system field")
    msp(sp, plan=True)
    sp.add_argument("--tokens", help="training tokens: adds time-to-train sensitivities")

    sp = add("validate", cmd_validate, "predicted vs measured step times of a cases file")
    sp.add_argument("--cases", help="cases file (default: the shipped calibration set)")
    constants_flag(sp)

    sp = add("calibrate", cmd_calibrate,
             "fit the efficiency constants to measured runs; writes a constants file")
    sp.add_argument("--cases", action="append", required=True, metavar="FILE",
                    help="cases file of measured runs (repeatable)")
    sp.add_argument("--fit", nargs="+", metavar="NAME", default=[],
                    help="constants to fit (default: all; unidentified ones are reported)")
    sp.add_argument("--out", metavar="FILE", help="write the fitted constants (TOML)")
    sp.add_argument("--hold-out", nargs="+", metavar="ID", default=[],
                    help="case ids left out of the fit and reported separately")
    sp.add_argument("--steps", type=int, default=400, help="Adam steps (default 400)")
    constants_flag(sp)

    sp = add("reproduce", cmd_reproduce, "the copper vs Passage study: tables, plots, time to train")
    sp.add_argument("--quick", action="store_true", help="the reduced run (about two minutes)")
    sp.add_argument("--out", default="out/reproduce", help="output folder (default out/reproduce)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bars")
    constants_flag(sp)

    sp = add("bench", cmd_bench, "steady-state rate of the exact model on random valid plans")
    sp.add_argument("--model", default="megatron-1t", help="model (default megatron-1t)")
    sp.add_argument("--system", default="dgx-a100-selene", help="system (default dgx-a100-selene)")
    sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    sp.add_argument("--n", type=int, default=4_000_000, help="plans to evaluate (default 4M)")
    sp.add_argument("--batch", type=int, default=1 << 18, help="plans per vmapped call")
    sp.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    sp.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cpo-opt`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "fn", None):
            parser.print_help(sys.stderr)
            return 2
        import jax
        # entry point: float64 everywhere except a float32 bench (the library never flips it)
        jax.config.update("jax_enable_x64", args.command != "bench" or args.dtype == "float64")
        runtime.enable_compile_cache()
        args.fn(args)
        return 0
    except ArgumentError as e:  # a library argument: name the flag the user typed
        print(f"{FLAGS.get(e.argument, '--' + e.argument.replace('_', '-'))}: {e.rule}",
              file=sys.stderr)
        return 2
    except (InputError, UsageError) as e:
        print(str(e).splitlines()[0] if str(e) else "bad input", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cpo-opt: interrupted", file=sys.stderr)
        return 1
    except Exception as e:  # internal failure: one line unless debugging
        if os.environ.get("CPO_OPT_DEBUG"):
            raise
        msg = f"{type(e).__name__}: {e}".splitlines()[0]
        print(f"cpo-opt: internal error: {msg} (set CPO_OPT_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
