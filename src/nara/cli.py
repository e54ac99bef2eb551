"""The ``nara`` command: one subcommand per module of :mod:`nara.commands`.

A subcommand is a module ``nara/commands/<name>.py`` whose docstring is its help (first line: the
summary) and which defines ``EXAMPLES`` (str), ``add_arguments(parser)`` and ``run(args) -> int``.
Adding a subcommand is adding that one file. Modules import torch inside ``run`` only, so
``nara --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Iterator
from types import ModuleType

from nara import __version__

EXAMPLES = """examples:
  nara demo                                   # LoRA vs NaRA on the embedded model, < 15 min on CPU
  nara recipes                                # the ready recipes in configs/
  nara train configs/demo.yaml training.max_steps=50
  nara generate --model tiny --prompt "What is 3 + 4?"
  nara eval --model tiny --adapter runs/demo/nara/final --task embedded:arithmetic --limit 50

Set NARA_DEBUG=1 to see full tracebacks instead of one-line errors."""


def iter_commands() -> Iterator[tuple[str, ModuleType]]:
    """(name, module) of every subcommand module, sorted by name."""
    import nara.commands

    for info in sorted(pkgutil.iter_modules(nara.commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield info.name, importlib.import_module(f"nara.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nara",
        description="Noise-aware parameter-efficient fine-tuning of diffusion language models.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nara {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in iter_commands():
        doc = (module.__doc__ or name).strip()
        command = sub.add_parser(
            name,
            help=doc.splitlines()[0],
            description=doc,
            epilog=getattr(module, "EXAMPLES", None),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``nara`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (`train r.yaml --no-progress training.lr=1e-4`)
    if extra and all("=" in e and not e.startswith("-") for e in extra) and "overrides" in args:
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        if os.environ.get("NARA_DEBUG"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"nara {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
