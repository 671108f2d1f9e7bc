#!/usr/bin/env python
"""Is B really better than A? Compare runs grouped by configuration, seeds pooled.

    python tools/compare_runs.py multirun/<date>/<time>                 # a sweep, e.g. -m seed=1,2,3 model/...=A,B
    python tools/compare_runs.py outputs/a1 outputs/a2 outputs/a3 outputs/b1 outputs/b2 outputs/b3
    python tools/compare_runs.py SWEEP_A SWEEP_B --baseline 1 --out comparison/

Runs whose configs are equal but for ``seed`` form a group; per group and metric (the final
metrics of each run's metrics.json: AP..APl, AP per category, TIDE dAP per error type when the
evaluator computed them) it reports the mean +- sample std over the group's runs, and each
group's difference from the baseline group (the first, or ``--baseline K``), marked *exceeds* when
|mean_B - mean_A| > std_A + std_B (the mean +- std bars do not overlap) and *within* otherwise.
See docs/evaluation.md.

Prints the tables; writes comparison.md, comparison.json and comparison.png (AP per group with
error bars) into ``--out`` (default: the sweep folder when one sweep is given; otherwise only with
``--out``). A sweep's failed or unfinished jobs are left out with a note; a folder that is not a
run, a run without metrics.json, runs on different test sets, or no configuration with two seeds
is an error (one line, exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from framework.utils.cli import add_traceback_flag, run_tool


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP", help="run directories and/or sweep (multirun) folders")
    parser.add_argument("--baseline", type=int, default=0, help="index of the group the others are compared with (default 0: A)")
    parser.add_argument("--out", help="folder for comparison.md / .json / .png (default: the sweep, when one is given)")
    add_traceback_flag(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from framework.engine.comparison_report import comparison_markdown, write_comparison
    from framework.engine.run_comparison import compare_groups, find_runs

    runs, notes = find_runs(args.paths)
    comparison = compare_groups(runs, baseline=args.baseline, notes=notes)
    print(comparison_markdown(comparison))
    out = Path(args.out) if args.out else None
    if out is None and len(args.paths) == 1 and all(r.path.parent == Path(args.paths[0]) for r in runs):
        out = Path(args.paths[0])
    if out is not None:
        paths = write_comparison(comparison, out)
        print(f"Wrote {', '.join(p.name for p in paths.values())} to {out}")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    return run_tool(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
