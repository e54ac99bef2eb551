"""List the ready-made recipes (YAML files found in configs/, not a hand-kept list).

Folders searched: $NARA_RECIPES (path-separated), ./configs, and the configs/ of a nara source
checkout. Run one with `nara train NAME`, an RL recipe (marked [nara rl]) with `nara rl NAME`.
"""

from __future__ import annotations

import argparse

EXAMPLES = """examples:
  nara recipes
  nara recipes --paths
  nara train llada8b/math_nara training.resume=latest"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paths", action="store_true", help="show each recipe's file path")


def run(args: argparse.Namespace) -> int:
    from nara.training.recipes import find_recipes, recipe_dirs

    recipes = find_recipes(None)
    if not recipes:
        dirs = ", ".join(str(d) for d in recipe_dirs()) or "no configs/ folder found"
        print(f"no recipes found (searched: {dirs}); set NARA_RECIPES to a folder of YAML recipes")
        return 1
    width = max(len(r.name) for r in recipes)
    for r in recipes:
        where = f"  [{r.path}]" if args.paths else ""
        rl = "  [nara rl]" if r.command == "rl" else ""
        print(f"{r.name:<{width}}  {r.summary}{rl}{where}")
    return 0
