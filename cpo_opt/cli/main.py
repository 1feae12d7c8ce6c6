"""The ``cpo-opt`` command line (contract: SPEC.md section 2).

Exit status: 0 done, 2 bad input (one line on stderr naming the file, key and rule), 1 internal
failure (one line; set ``CPO_OPT_DEBUG=1`` for the traceback). With ``--json`` standard output is
exactly one JSON object; progress and warnings go to standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import threading
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
        message = " ".join(message.split())
        if len(message) > 300:  # a 5000-digit value is not worth repeating
            message = message[:280] + f"... ({len(message)} characters)"
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
    low, high = TOKENS_RANGE
    if not low <= value <= high:
        raise UsageError(f"{flag}: must be between {low:g} and {high:g} tokens (got {text!r})")
    return value


TOKENS_RANGE = (1.0, 1e20)
"""Accepted ``--tokens`` (the documented range of ``scenario.tokens`` in the schema): fewer
than one token or more than 1e20 (10^7 times a frontier run) is a typo, and a time to train
of 1e-300 tokens underflows to zero days."""

SEED_RANGE = (0, 2**32 - 1)
"""``--seed``: numpy's ``default_rng`` takes non-negative integers; 32 bits are plenty."""

LIMITS = {"seed": SEED_RANGE, "starts": (1, 4096), "steps": (1, 100_000), "n": (1, 10**10),
          "batch": (1, 2**22), "max_seconds": (1, 86_400), "num_processes": (1, 2**20),
          "process_id": (0, 2**20 - 1), "coordinator_timeout": (1, 3_600),
          "domain_multiple": (1, 2**27), "global_batch": (1, 2**40),
          "samples": (1, 65_536)}
"""Ranges of the numeric flags, stated in ``--help``: enough for any use, small enough that no
flag value allocates unbounded memory (``--batch`` plans are held at once; ``bench`` draws
its ``--n`` plans batch by batch) or runs unbounded (``--max-seconds`` caps a bench,
``--coordinator-timeout`` the wait for the other processes of a distributed run)."""

COMMAND_LIMITS = {"calibrate": {"steps": (1, 10_000)}}
"""Where one command bounds a flag differently (``calibrate --steps``:
``cpo_opt.analysis.calibrate.MAX_STEPS``)."""


def _limit(command: str | None, name: str) -> tuple[int, int]:
    return COMMAND_LIMITS.get(command or "", {}).get(name, LIMITS[name])


def check_int_flags(args, names) -> None:
    """Integer flags (``--seed``, ``--starts``, ``--steps``, ``--n``, ...) within their
    ranges (:data:`LIMITS`, :data:`COMMAND_LIMITS`)."""
    for name in names:
        value = getattr(args, name, None)
        if value is None:
            continue
        low, high = _limit(getattr(args, "command", None), name)
        if not low <= value <= high:
            shown = value if abs(value) < 10**30 else f"an integer of {len(str(abs(value)))} digits"
            raise UsageError(f"--{name.replace('_', '-')}: must be an integer between {low} "
                             f"and {high} (got {shown})")


def _state_limits(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Append each bounded integer flag's range to its ``--help`` line (every command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command, sp in action.choices.items():
                for a in sp._actions:
                    name = a.dest
                    if a.help == argparse.SUPPRESS:
                        continue
                    if a.type is int and name in LIMITS:
                        low, high = _limit(command, name)
                        a.help = (a.help + " " if a.help else "") + f"[{low}..{high}]"
                    elif name in TEXT_LIMITS:
                        a.help = (a.help + " " if a.help else "") + TEXT_LIMITS[name]
    return parser


TEXT_LIMITS = {"tokens": f"[{TOKENS_RANGE[0]:g}..{TOKENS_RANGE[1]:g}]",
               "power_budget_kw": "(> 0, finite)"}
"""The ranges of the numeric flags that are not plain integers, as ``--help`` states them."""


def parse_sets(items: list[str] | None, flag: str = "--set") -> dict[str, str]:
    """``--set section.key=value`` items -> ``{"section.key": "value"}`` (``flag`` names the
    flag in messages: ``--set-against`` for compare's candidate)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UsageError(f"{flag}: expected section.key=value (got {_short(item)})")
        k, v = item.split("=", 1)
        if not k.strip() or not v.strip():
            raise UsageError(f"{flag}: expected section.key=value (got {_short(item)})")
        if k.strip() in out:
            raise UsageError(f"{flag}: {k.strip()}: given twice")
        out[k.strip()] = v.strip()
    return out


def _short(text: str) -> str:
    text = repr(text)
    return text if len(text) <= 80 else text[:77] + "..."


# --------------------------------------------------------------------------- output helpers
def emit(obj: dict[str, Any], as_json: bool, text: Callable[[dict], str]) -> None:
    """Print ``obj`` as one JSON object, or as the readable text ``text(obj)``."""
    if as_json:
        sys.stdout.write(to_json(obj) + "\n")
    else:
        check_finite(obj)
        sys.stdout.write(text(obj).rstrip() + "\n")


class NonFiniteOutput(RuntimeError):
    """A NaN or infinity reached a command's output: an internal error (exit 1), never
    printed. Inputs are range-checked (``schema.RANGES``) so that this cannot happen."""


def to_json(obj: Any) -> str:
    """``obj`` as strict JSON (``allow_nan=False``); a non-finite number raises
    :class:`NonFiniteOutput` naming where it is."""
    check_finite(obj)
    return json.dumps(obj, indent=1, default=_json_default, allow_nan=False)


def check_finite(obj: Any, path: str = "") -> None:
    """Raise :class:`NonFiniteOutput` at the first NaN/infinity inside ``obj``."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, f"{path}[{i}]")
    elif isinstance(obj, float) or (hasattr(obj, "dtype") and getattr(obj, "shape", None) == ()
                                    and obj.dtype.kind == "f"):
        if not math.isfinite(float(obj)):
            raise NonFiniteOutput(f"non-finite number {float(obj)} at {path or 'the top'}")


def _json_default(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


def warn(obj: dict[str, Any], as_json: bool) -> None:
    """Warnings of a result on standard error (text mode; in JSON they are in the object)."""
    if not as_json:
        for w in obj.get("warnings", []):
            print(f"warning: {w}", file=sys.stderr)


def _need_inputs(args, plan: bool = False) -> None:
    """--model/--system are required unless --scenario gives them."""
    if args.scenario is None:
        missing = [f for f in ("model", "system") if getattr(args, f) is None]
        if missing:
            raise UsageError(f"cpo-opt {args.command}: --{missing[0]} is required (or "
                             "--scenario NAME|FILE)")


# --------------------------------------------------------------------------- commands
def cmd_presets(args) -> None:
    from cpo_opt.inputs.loaders import list_presets
    from cpo_opt.cli import text
    if args.action == "show":
        if not args.name:
            raise UsageError("cpo-opt presets show: NAME is required")
        from cpo_opt import api
        r = api.preset_show(args.name)
        emit(r, args.json, text.preset_show)
        return
    if args.action is not None:
        raise UsageError(f"cpo-opt presets: unknown action {args.action!r} (expected: show)")
    found = list_presets()
    emit({k: [{"name": n, "description": d} for n, d in v] for k, v in found.items()},
         args.json, text.presets_table)


def _tokens(args) -> float | None:
    text = getattr(args, "tokens", None)
    return None if text is None else parse_count(text, "--tokens")


def cmd_evaluate(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    _need_inputs(args)
    check_int_flags(args, ("global_batch",))
    r = api.evaluate(args.model, args.system, args.plan, _tokens(args),
                     overrides=parse_sets(args.set), scenario=args.scenario,
                     constants=args.constants, stack=args.stack, dtype=args.dtype,
                     global_batch=args.global_batch, simulate=args.simulate)
    warn(r, args.json)
    emit(r.to_dict(), args.json, _formatter(args, text.evaluate_table))


def _formatter(args, table: Callable[[dict], str]) -> Callable[[dict], str]:
    """The text of a result: its table, or with ``--format megatron`` the Megatron-Core
    arguments of its plan (``--json`` prints the object, which holds them as
    ``plan_megatron``)."""
    from cpo_opt.cli import text
    return text.megatron_text if getattr(args, "format", "text") == "megatron" else table


def cmd_validate(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    r = api.validate(args.cases, constants=args.constants, stack=args.stack)
    warn(r, args.json)
    emit(r.to_dict(), args.json, text.validate_table)


def cmd_calibrate(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    check_int_flags(args, ("steps",))
    r = api.calibrate(args.cases, args.fit or None, out=args.out, constants=args.constants,
                      steps=args.steps, hold_out=tuple(args.hold_out), prior=args.prior,
                      stack=args.stack, transfer=args.transfer, method=args.method)
    warn(r, args.json)
    emit(r.to_dict(), args.json, text.calibrate_table)


def cmd_bench(args) -> None:
    from cpo_opt import api
    from cpo_opt.analysis.bench import bench
    from cpo_opt.cli import text
    check_int_flags(args, ("n", "batch", "seed", "max_seconds"))  # batch None: the default
    from cpo_opt.analysis.evaluate import effective_system, system_warnings
    sets = parse_sets(args.set)
    model, system, _ = api.load_inputs(args.model, args.system, None, sets, stack=args.stack)
    r = bench(model, system, n=args.n, batch=args.batch, dtype=args.dtype, seed=args.seed,
              max_seconds=args.max_seconds, stack=args.stack)
    r.update(system_effective=effective_system(system, sets), overrides=sets,
             warnings=system_warnings(system) + r.get("warnings", []))
    warn(r, args.json)
    emit(r, args.json, text.bench_table)


def cmd_optimize(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    check_int_flags(args, ("seed", "starts", "steps", "global_batch", "domain_multiple",
                           "num_processes", "process_id", "coordinator_timeout", "samples"))
    if args.power_budget_kw is not None and not args.free:
        raise UsageError("--power-budget-kW: needs --free: the budget caps the interconnect "
                         "power of the hardware values the search chooses")
    _need_inputs(args)
    budgets = args.power_budget_kw or [None]
    if len(budgets) > 1:
        r = api.power_sweep(args.model, args.system, budgets, args.global_batch,
                            overrides=parse_sets(args.set), scenario=args.scenario,
                            stack=args.stack, constants=args.constants,
                            tokens=_tokens(args), exhaustive=args.exhaustive,
                            free=tuple(args.free), dtype=args.dtype, starts=args.starts,
                            steps=args.steps, seed=args.seed,
                            domain_multiple=args.domain_multiple,
                            objective=args.objective, samples=args.samples,
                            progress=sys.stderr.isatty() and not args.json)
        warn(r, args.json)
        emit(r.to_dict(), args.json, text.sweep_table)
        return
    nproc = api.start_distributed(args.coordinator, args.num_processes, args.process_id,
                                  timeout=args.coordinator_timeout)
    r = api.optimize(args.model, args.system, args.global_batch, exhaustive=args.exhaustive,
                     scenario=args.scenario, domain_multiple=args.domain_multiple,
                     free=tuple(args.free), power_budget_kW=budgets[0],
                     dtype=args.dtype, starts=args.starts, steps=args.steps, seed=args.seed,
                     tokens=_tokens(args), overrides=parse_sets(args.set),
                     progress=sys.stderr.isatty() and not args.json and _main_process(),
                     constants=args.constants, stack=args.stack,
                     objective=args.objective, samples=args.samples)
    if _main_process():  # every process holds the result; process 0 prints it
        warn(r, args.json)
        emit(r.to_dict(), args.json, _formatter(args, lambda d: text.optimize_table(d) + (
            f"\nprocesses: {nproc}" if nproc > 1 else "")))


def _main_process() -> bool:
    from cpo_opt.search import distributed
    return distributed.is_main()


def _distributed_flags(sp) -> None:
    sp.add_argument("--coordinator", metavar="HOST:PORT",
                    help="jax.distributed coordinator (process 0's host and a free port)")
    sp.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    sp.add_argument("--process-id", type=int, metavar="I", help="this process, 0..N-1")
    sp.add_argument("--coordinator-timeout", type=int, metavar="S", default=None,
                    help="seconds to wait for the coordinator and the other processes before "
                         "giving up with exit 2 (default 120; env CPO_OPT_COORDINATOR_TIMEOUT)")


def cmd_sensitivity(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    _need_inputs(args)
    check_int_flags(args, ("global_batch",))

    def notice(message: str) -> None:  # once the inputs are checked, before the search
        if not args.json:
            print(f"sensitivity: {message}", file=sys.stderr)
    r = api.sensitivity(args.model, args.system, args.plan, _tokens(args),
                        overrides=parse_sets(args.set), scenario=args.scenario,
                        constants=args.constants, stack=args.stack, dtype=args.dtype,
                        global_batch=args.global_batch,
                        progress=sys.stderr.isatty() and not args.json, notice=notice)
    warn(r, args.json)
    emit(r.to_dict(), args.json, text.sensitivity_table)


def cmd_compare(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    check_int_flags(args, ("seed", "global_batch", "samples"))
    _need_inputs(args)
    r = api.compare(args.model, args.system, args.against, _tokens(args),
                    scenario=args.scenario,
                    global_batch=args.global_batch, exhaustive=args.exhaustive,
                    dtype=args.dtype, seed=args.seed, overrides=parse_sets(args.set),
                    against_overrides=parse_sets(args.set_against, "--set-against"),
                    progress=sys.stderr.isatty() and not args.json, constants=args.constants,
                    stack=args.stack, samples=args.samples,
                    alternatives=tuple(args.alternatives))
    warn(r, args.json)
    emit(r.to_dict(), args.json, text.compare_table)


def cmd_reproduce(args) -> None:
    from cpo_opt import api
    from cpo_opt.cli import text
    check_int_flags(args, ("num_processes", "process_id", "coordinator_timeout"))
    api.start_distributed(args.coordinator, args.num_processes, args.process_id,
                          timeout=args.coordinator_timeout)
    r = api.reproduce(quick=args.quick, out_dir=args.out, progress=not args.no_progress,
                      constants=args.constants, stack=args.stack)
    if _main_process():
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

    def msp(sp, plan=False, plan_required=True):
        sp.add_argument("--model", help="model file (.toml/.json) or preset")
        sp.add_argument("--system", help="system file or preset")
        sp.add_argument("--scenario", metavar="NAME|FILE",
                        help="a scenario (preset or file): gives the model, system and, where "
                             "it holds them, plan, global batch and tokens; explicit flags win")
        if plan:
            sp.add_argument("--plan", required=False,
                            help="plan file, preset, or inline 'tp=8,pp=16,ep=64' (commas or "
                                 "spaces; the 'best plan' line of optimize is accepted)"
                            + ("" if plan_required else "; default: optimize first"))
        sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                        help="override a system field, e.g. scale_up.bandwidth_GB_s=1800 "
                             "(repeatable)")
        constants_flag(sp)

    def stack_flag(sp):
        sp.add_argument("--stack", metavar="NAME|FILE",
                        help="software stack (preset or file): the default of every software "
                             "option a plan does not set, and what a search may choose "
                             "(default: megatron-core-tuned; `cpo-opt presets` lists stacks)")

    def constants_flag(sp):
        stack_flag(sp)
        sp.add_argument("--constants", metavar="FILE",
                        help="constants file (written by calibrate) replacing the shipped "
                             "efficiency constants")

    sp = add("presets", cmd_presets, "list shipped models, systems, GPUs, plans and scenarios; "
             "'presets show NAME' prints one in full with its sources")
    sp.add_argument("action", nargs="?", metavar="show", help="show one preset")
    sp.add_argument("name", nargs="?", help="preset name (case-insensitive; KIND/NAME when "
                                            "several kinds share it)")

    def batch_flags(sp, whose):
        sp.add_argument("--global-batch", type=int, metavar="N",
                        help=f"sequences per step: {whose} global_batch (default, the one rule "
                             "of every command: the smallest multiple of micro_batch x dp "
                             "(for a search: of the GPU count) holding >= 2^22 tokens)")
        sp.add_argument("--dtype", choices=["bf16", "fp8"], default=None,
                        help=f"GEMM precision: {whose} dtype (default: "
                             + ("the plan's, else bf16)" if whose == "the plan's" else
                                "the model's training precision, [model] dtype, else bf16)"))

    def format_flag(sp):
        sp.add_argument("--format", choices=("text", "megatron"), default="text",
                        help="text: the readable table (default); megatron: the plan as "
                             "Megatron-Core arguments (docs/megatron.md; --json always holds "
                             "them as plan_megatron)")

    sp = add("evaluate", cmd_evaluate, "one step-time evaluation")
    msp(sp, plan=True)
    format_flag(sp)
    batch_flags(sp, "the plan's")
    sp.add_argument("--tokens", help="training tokens (e.g. 15e12 or 15T): adds time to train")
    sp.add_argument("--simulate", action="store_true",
                    help="also schedule the step in the event simulator (cpo_opt.sim, "
                         "docs/simulator.md): its step time, the closed form's difference "
                         "from it, and the critical path")

    sp = add("optimize", cmd_optimize, "best plan (and hardware values with --free)")
    msp(sp)
    format_flag(sp)
    batch_flags(sp, "the searched plans'")
    sp.add_argument("--exhaustive", action="store_const", const=True, default=None,
                    help="enumerate every valid plan and score all (ground truth; the default "
                         "when the space is small enough to be faster)")
    sp.add_argument("--gradient", action="store_const", const=False, dest="exhaustive",
                    help="gradient search even on a small space")
    sp.add_argument("--free", nargs="+", metavar="KEY", default=[],
                    help="continuous system fields to optimize too, e.g. "
                         "scale_up.bandwidth_GB_s scale_up.domain_size")
    sp.add_argument("--tokens", help="training tokens: reports time to train")
    sp.add_argument("--power-budget-kW", type=float, dest="power_budget_kw", nargs="+",
                    metavar="KW",
                    help="cap on provisioned interconnect power of the cluster, kW (with "
                         "--free); several values sweep the budget")
    sp.add_argument("--domain-multiple", type=int, metavar="N",
                    help="with scale_up.domain_size free: settle on multiples of N GPUs (a "
                         "rack) instead of divisors of the cluster")
    sp.add_argument("--starts", type=int, default=32, help="gradient search: random starts")
    sp.add_argument("--steps", type=int, default=150, help="gradient search: Adam steps")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--objective", choices=["point", "mean", "p90", "worst"], default="point",
                    help="what the search minimises: the step time at the point constants "
                         "(default), or its mean, 90th percentile or worst case over sampled "
                         "constants and the model-form term (adds a robustness report)")
    sp.add_argument("--samples", type=int, default=None, metavar="N",
                    help="samples of the robust objectives (default 32)")
    _distributed_flags(sp)

    sp = add("sensitivity", cmd_sensitivity,
             "gradients and elasticities of step time w.r.t. every continuous system field")
    msp(sp, plan=True, plan_required=False)
    sp.add_argument("--tokens", help="training tokens: adds time-to-train sensitivities")
    batch_flags(sp, "the plan's (or, without --plan, the searched plans')")

    sp = add("compare", cmd_compare, "the best plan on a baseline system and on a candidate "
             "(--against), the baseline's plan on the candidate, speedups and why")
    msp(sp)
    sp.add_argument("--against", required=True, help="candidate system file or preset")
    sp.add_argument("--set-against", action="append", metavar="SECTION.KEY=VALUE",
                    help="override a field of the candidate system (repeatable); --set "
                         "overrides the baseline")
    sp.add_argument("--tokens", help="training tokens: reports times to train")
    batch_flags(sp, "both systems' searched plans'")
    sp.add_argument("--exhaustive", action="store_const", const=True, default=None,
                    help="enumerate every valid plan on both systems (ground truth; the "
                         "default when the space is small enough to be faster)")
    sp.add_argument("--seed", type=int, default=0, help="search and sampling seed")
    sp.add_argument("--samples", type=int, default=256, metavar="N",
                    help="samples of the speedup's distribution (constants posterior, "
                         "model-form term, stack alternatives; default 256)")
    sp.add_argument("--alternatives", nargs="+", default=[], metavar="OPTION",
                    choices=["overlap_ep", "overlap_tp", "overlap_dp", "cuda_graphs",
                             "dispatcher", "pipeline_layout"],
                    help="stack options whose values the distribution samples (each value "
                         "equally likely, the same on both sides): overlap_ep overlap_tp "
                         "overlap_dp cuda_graphs dispatcher pipeline_layout")

    sp = add("validate", cmd_validate, "predicted vs measured step times of a cases file")
    sp.add_argument("--cases", help="cases file (default: the shipped calibration set)")
    constants_flag(sp)

    sp = add("calibrate", cmd_calibrate,
             "fit the efficiency constants to measured runs; writes a constants file")
    sp.add_argument("--cases", action="append", required=True, metavar="FILE",
                    help="cases file of measured runs (repeatable)")
    sp.add_argument("--fit", nargs="+", metavar="[LEVEL:]NAME", default=[],
                    help="constants to fit, each at every GPU generation of the cases or, as "
                         "LEVEL:NAME, at one (e.g. blackwell:clock_fraction) (default: all; "
                         "unidentified ones are reported)")
    sp.add_argument("--out", metavar="FILE", help="write the fitted constants (TOML)")
    sp.add_argument("--hold-out", nargs="+", metavar="ID", default=[],
                    help="case ids left out of the fit and reported separately")
    sp.add_argument("--steps", type=int, default=400, help="Adam steps (default 400)")
    sp.add_argument("--method", choices=("adam", "gauss-newton"), default="adam",
                    help="adam (default: --steps steps of Adam) or gauss-newton "
                         "(Levenberg-Marquardt from the compiled Jacobian: far fewer model "
                         "evaluations on large sets; --steps is then ignored)")
    sp.add_argument("--prior", choices=("shipped", "physical"), default="shipped",
                    help="start from the shipped constants (default) or from the physical "
                         "defaults without the shipped fitted values (how they are "
                         "regenerated: experiments/fit_shipped_constants.py)")
    sp.add_argument("--transfer", metavar="SOURCE:TARGET",
                    help="fit the cases of GPU generation SOURCE only and carry the fitted "
                         "shifts relative to the shipped constants to generation TARGET, with "
                         "wider intervals (e.g. hopper:blackwell); the other cases are held "
                         "out, TARGET's reported before and after")
    constants_flag(sp)

    sp = add("reproduce", cmd_reproduce, "the copper vs Passage study: tables, plots, time to train")
    sp.add_argument("--quick", action="store_true", help="the reduced run (about two minutes)")
    sp.add_argument("--out", default="out/reproduce", help="output folder (default out/reproduce)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bars")
    _distributed_flags(sp)
    constants_flag(sp)

    sp = add("bench", cmd_bench, "steady-state rate of the exact model on random valid plans")
    sp.add_argument("--model", default="megatron-1t", help="model (default megatron-1t)")
    sp.add_argument("--system", default="dgx-a100-selene", help="system (default dgx-a100-selene)")
    sp.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    sp.add_argument("--n", type=int, default=4_000_000, help="plans to evaluate (default 4M)")
    sp.add_argument("--batch", type=int, default=None,
                    help="plans per vmapped call (default 16384 on CPU, 262144 per GPU)")
    sp.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    sp.add_argument("--seed", type=int, default=0, help="plan sample seed")
    sp.add_argument("--max-seconds", type=int, default=600, metavar="S",
                    help="stop after S seconds of evaluation and report the plans evaluated "
                         "so far (default 600)")
    stack_flag(sp)
    return _state_limits(p)


EXIT_INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""Exit status after Ctrl-C / SIGTERM (128 + the signal, the shell's convention): the run
stopped, every file it was writing was removed and every earlier output is unchanged
(:mod:`cpo_opt.inputs.writes`)."""


@contextlib.contextmanager
def _terminate_cleanly():
    """SIGTERM raises :class:`~cpo_opt.inputs.writes.Interrupted` in the main thread while a
    command runs, so that staged writes clean up as they do on Ctrl-C (Python's default for
    SIGTERM ends the process at once, leaving staging files behind)."""
    from cpo_opt.inputs import writes
    from cpo_opt.inputs.writes import Interrupted
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    writes.RECEIVED.clear()

    def handler(signum, frame):
        writes.RECEIVED.append(signum)  # raised again if this exception is dropped
        raise Interrupted(signum)

    def on_int(signum, frame):
        writes.RECEIVED.append(signum)
        raise KeyboardInterrupt

    def unraisable(u):  # raised inside a GC callback: dropped, re-raised by check_interrupted
        if not isinstance(u.exc_value, (Interrupted, KeyboardInterrupt)):
            hook(u)
    old = signal.signal(signal.SIGTERM, handler)
    old_int = signal.signal(signal.SIGINT, on_int)
    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
        sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cpo-opt`` console script; returns the exit status.

    Standard error holds the one error line first: notes about the run (the compile cache
    being off) are printed after the command's answer or error line."""
    argv = sys.argv[1:] if argv is None else argv
    notes: list[str] = []
    try:
        with _terminate_cleanly():
            return _main(argv, notes)
    finally:
        for note in notes:
            print(note, file=sys.stderr)


def _main(argv: list[str], notes: list[str]) -> int:
    from cpo_opt.inputs.writes import Interrupted
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "fn", None):
            commands = [name for action in parser._actions
                        if isinstance(action, argparse._SubParsersAction)
                        for name in action.choices]
            print(f"cpo-opt: a command is required: {', '.join(commands)} "
                  "(cpo-opt COMMAND --help for its flags)", file=sys.stderr)
            return 2
        stack = getattr(args, "stack", None)
        if stack is not None and not stack.strip():
            raise UsageError("--stack: empty; give a stack file (.toml or .json) or a stack "
                             "preset name (cpo-opt presets)")
        import jax
        # entry point: float64 everywhere except a float32 bench (the library never flips it)
        jax.config.update("jax_enable_x64", args.command != "bench" or args.dtype == "float64")
        runtime.enable_compile_cache(notes)
        from cpo_opt.cli.compiling import watch
        with watch(args.command):  # XLA's log banners to the debug log; "compiling" notice
            args.fn(args)
        from cpo_opt.inputs.writes import check_interrupted
        check_interrupted()  # a SIGTERM whose exception a GC callback dropped
        return 0
    except ArgumentError as e:  # a library argument: name the flag the user typed
        print(f"{FLAGS.get(e.argument, '--' + e.argument.replace('_', '-'))}: {e.rule}",
              file=sys.stderr)
        return 2
    except (InputError, UsageError) as e:
        print(str(e).splitlines()[0] if str(e) else "bad input", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cpo-opt: interrupted (SIGINT); earlier outputs are unchanged", file=sys.stderr)
        return EXIT_INTERRUPTED[signal.SIGINT]
    except Interrupted as e:
        print(f"cpo-opt: {e}; earlier outputs are unchanged", file=sys.stderr)
        return EXIT_INTERRUPTED.get(e.signum, 143)
    except Exception as e:  # internal failure: one line unless debugging
        if os.environ.get("CPO_OPT_DEBUG"):
            raise
        msg = f"{type(e).__name__}: {e}".splitlines()[0]
        print(f"cpo-opt: internal error: {msg} (set CPO_OPT_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


def console() -> None:
    """The ``cpo-opt`` console script and ``python -m cpo_opt``: :func:`main`, then the exit.

    After SIGTERM or Ctrl-C the process ends with ``os._exit`` once its streams are flushed,
    skipping the interpreter's shutdown: XLA's compiler threads may still be running then, and
    a shutdown under them crashed once (``calibrate`` stopped by SIGTERM printed its line, then
    died with SIGSEGV, exit -11 instead of 143; round 13's suite). Every staged write has been
    cleaned up before :func:`main` returns, so nothing is left to run at exit."""
    code = main()
    if code in EXIT_INTERRUPTED.values():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more to say
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
