"""What a stack per release would buy (issue 20), measured on the half of a release's rows
that no fit saw.

The published Megatron-Bridge rows of the older containers (26.04.01: ``mb2604-*``, 25.11:
``mb2511-*`` in ``cpo_opt/data/moe-published.toml``) run the same plans as the 26.08 rows
on slower software, and the default stack (sourced from the 26.08 release) misses them by a
median of 29% and 37%. Issue 20 lets a stack name a constants file (calibrate's output), so
that an older stack can carry its own fitted efficiencies. Before shipping such stacks, this
script measures what they would predict on runs they were not fitted to:

* the rows of one release, sorted by id, split into two interleaved halves (even and odd
  positions: each model on about half its hardware in each half);
* ``calibrate`` (Gauss-Newton, from the shipped constants) fits ``clock_fraction`` at each
  GPU generation (the lumped compute efficiency the shipped fit also carries) on one half;
* the other half is held out and reported before (shipped constants) and after (the
  release's fitted constants); then the halves swap.

Nothing here is written into ``cpo_opt``: the shipped constants and stacks are untouched and
the file stays out of sample for every shipped number. Run::

    python experiments/release_split.py            # both releases, both halves (minutes)
    python experiments/release_split.py --release mb2604

``--recipe`` first gives each row the software options of the recipe its ``source`` quotes
(``experiments/recipe_options.py``: dispatcher, CUDA graphs, EP overlap, recompute; only the
26.04.01 rows quote one), so the fit absorbs only what the recipe does not explain; ``--fit``
names other constants to fit (``LEVEL:NAME`` as ``calibrate --fit``), e.g. the host's issue
time per kernel, ``blackwell:host_launch_s hopper:host_launch_s``::

    python experiments/release_split.py --release mb2604 --recipe
    python experiments/release_split.py --release mb2604 --recipe \
        --fit blackwell:host_launch_s hopper:host_launch_s
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import tomllib

FIT = ("blackwell:clock_fraction", "hopper:clock_fraction")
RELEASES = ("mb2604", "mb2511")
FILE = "cpo_opt/data/moe-published.toml"


def with_recipes(release: str, folder: pathlib.Path) -> str:
    """A JSON cases file of ``release``'s rows, each plan completed by the options of the
    recipe its source quotes (rows without one unchanged); returns its path."""
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from recipe_options import recipe_options
    doc = tomllib.loads(pathlib.Path(FILE).read_text())
    rows = []
    for case in doc["case"]:
        if not case["id"].startswith(release + "-"):
            continue
        rec = recipe_options(case.get("source", ""))
        if rec is not None:
            case = {**case, "plan": {**case["plan"], **rec[0]}}
        rows.append(case)
    path = folder / f"{release}-recipes.json"
    path.write_text(json.dumps({"case": rows}))
    return str(path)


def split(release: str, cases_file: str = FILE):
    """``(rows, halves)``: the release's cases sorted by id and their two interleaved halves
    of ids."""
    from cpo_opt.inputs import load_cases
    rows = sorted((c for c in load_cases(cases_file) if c.id.startswith(release + "-")),
                  key=lambda c: c.id)
    ids = [c.id for c in rows]
    return rows, (ids[0::2], ids[1::2])


def run(release: str, half: int, cases_file: str = FILE, fit=FIT) -> dict:
    """Fit ``fit`` on half ``half`` of ``release``'s rows, hold out the other half."""
    import cpo_opt
    rows, halves = split(release, cases_file)
    held = halves[1 - half]
    r = cpo_opt.calibrate(rows, fit=list(fit), hold_out=held, cross_validate=False,
                          method="gauss-newton").to_dict()
    per = {c["id"]: c for c in r["cases"]}
    fitted = {f"{lvl}:{name}": e.get("value")
              for lvl, d in r.get("levels", {}).items()
              for name, e in d.get("constants", {}).items()
              if isinstance(e, dict) and e.get("constrained")}
    return {"release": release, "half": half, "fit_ids": halves[half], "held_ids": held,
            "fitted": fitted,
            "held_before": [per[i]["error_before"] for i in held],
            "held_after": [per[i]["error_after"] for i in held],
            "fit_before": [per[i]["error_before"] for i in halves[half]],
            "fit_after": [per[i]["error_after"] for i in halves[half]],
            "per_case": {i: (per[i]["error_before"], per[i]["error_after"]) for i in held}}


def _med(xs) -> float:
    return statistics.median(abs(x) for x in xs)


def main(argv=None) -> int:
    from cpo_opt import runtime
    runtime.setup()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release", choices=RELEASES, action="append")
    ap.add_argument("--recipe", action="store_true",
                    help="complete each plan with its quoted recipe's options first")
    ap.add_argument("--fit", nargs="+", default=list(FIT), metavar="LEVEL:NAME",
                    help=f"constants to fit (default: {' '.join(FIT)})")
    a = ap.parse_args(argv)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="release-split-"))
    print(f"fit: {' '.join(a.fit)}; plans: "
          f"{'with the quoted recipe options' if a.recipe else 'as published'}\n")
    print("| release | fitted on | held out | fitted constants | held-out median |error| "
          "shipped -> release fit | held-out mean error shipped -> fit |")
    print("|---|---|---|---|---|---|")
    pooled = {}
    for release in a.release or RELEASES:
        cases_file = with_recipes(release, folder) if a.recipe else FILE
        for half in (0, 1):
            r = run(release, half, cases_file, a.fit)
            pooled.setdefault(release, []).append(r)
            consts = ", ".join(f"{k} {v:.4g}" for k, v in sorted(r["fitted"].items())
                               if v is not None)
            print(f"| {release} | half {half} ({len(r['fit_ids'])}) | {len(r['held_ids'])} | "
                  f"{consts} | {100 * _med(r['held_before']):.1f}% -> "
                  f"{100 * _med(r['held_after']):.1f}% | "
                  f"{100 * statistics.mean(r['held_before']):+.1f}% -> "
                  f"{100 * statistics.mean(r['held_after']):+.1f}% |", flush=True)
    print()
    for release, rs in pooled.items():
        before = [x for r in rs for x in r["held_before"]]
        after = [x for r in rs for x in r["held_after"]]
        print(f"{release}: every row held out once ({len(after)} rows): median |error| "
              f"{100 * _med(before):.1f}% shipped -> {100 * _med(after):.1f}% with the other "
              f"half's fit")
        for r in rs:
            for i, (b, f) in sorted(r["per_case"].items()):
                print(f"  {i:40s} {100 * b:+6.1f}% -> {100 * f:+6.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
