"""Run an experiment grid (methods × seeds × tasks × ablations), resumably, and report it.

CONFIG is a grid YAML (configs/experiments/*.yaml). Runs go one after another to
<output>/<name>/<task>/<method>/seed<S>/; a run whose metrics.json exists is skipped, a killed run
continues from its last checkpoint, so re-running the same command finishes a grid. At the end:
a noise profile per task and <output>/<name>/results.md (mean ± std over seeds). Overrides are
dotted key=value pairs into the grid file, values read as YAML. A file with `kind: mechanism`
runs the mechanism test instead (nara.experiments.mechanism), with the same flags.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  nara experiment configs/experiments/methods.yaml
  nara experiment configs/experiments/methods.yaml seeds=[0] recipe.training.max_steps=20
  nara experiment configs/experiments/methods.yaml --methods base,lora,nara
  nara experiment configs/experiments/methods.yaml --counts
  nara experiment configs/experiments/ablations.yaml tasks=[arithmetic] output=runs/abl
  nara experiment configs/experiments/methods.yaml --report    # table from finished runs only
  nara experiment configs/experiments/mechanism.yaml           # the mechanism test (distillation)"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="experiment grid YAML")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", help="e.g. recipe.training.max_steps=20"
    )
    parser.add_argument(
        "--methods", metavar="A,B", help="run only these method labels (comma-separated)"
    )
    parser.add_argument(
        "--counts", action="store_true", help="print trainable parameters per method and exit"
    )
    parser.add_argument("--report", action="store_true", help="only rebuild results.md and exit")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    parser.add_argument("--progress", action="store_true", help="show the training progress bars")


def run(args: argparse.Namespace) -> int:
    from nara.experiments import mechanism
    from nara.experiments.grid import load_grid

    if mechanism.is_mechanism_file(args.config):  # `kind: mechanism`: the mechanism test
        return mechanism.run_command(args)

    grid = load_grid(args.config, args.overrides)
    only = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    from nara.experiments import runner

    if args.dry_run:  # a sweep grid: its sweep runs, then each seed at the chosen rate
        for r in grid.sweep_runs(only):
            print(f"{r.task}\t{r.label}\tsweep lr {r.lr:g}\tseed {r.seed}\t{r.run_dir}")
        for r in grid.runs(only, lrs=runner.select_lrs(grid, only)):
            print(f"{r.task}\t{r.label}\tseed {r.seed}\t{r.run_dir}")
        return 0

    if args.report:
        print(runner.report(grid))
        return 0
    if not args.counts:
        grid.check_data(only)  # a missing data file stops the grid before the model loads
    base = runner.load_base(grid)
    if args.counts:
        for label, count in runner.parameter_counts(grid, base).items():
            print(f"{label:28s} {count:>12,}")
        return 0
    print(runner.run_grid(grid, only=only, base=base, progress=args.progress))
    return 0
