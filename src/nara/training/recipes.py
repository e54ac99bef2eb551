"""Find recipes on disk: the list comes from the folders, never from a hand-kept registry.

Searched, in order: the folders in ``$NARA_RECIPES`` (``os.pathsep``-separated), ``./configs``,
and the ``configs/`` folder of a source checkout of nara. A recipe's name is its path under its
folder without ``.yaml`` (``demo``, ``llada8b/math_nara``); ``configs/accelerate/`` holds
Accelerate launch configs and ``configs/experiments/`` the grids of ``nara experiment``:
neither is a training recipe, so both are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SKIP_DIRS = ("accelerate", "experiments")


@dataclass(frozen=True)
class Recipe:
    """A recipe file: its name, path and the first line of its header comment."""

    name: str
    path: Path
    summary: str


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes, existing ones only, without duplicates."""
    candidates = [Path(p) for p in os.environ.get("NARA_RECIPES", "").split(os.pathsep) if p]
    candidates.append(Path.cwd() / "configs")
    candidates.append(Path(__file__).resolve().parents[3] / "configs")  # source checkout
    seen: list[Path] = []
    for path in candidates:
        if path.is_dir() and path.resolve() not in seen:
            seen.append(path.resolve())
    return seen


def _summary(path: Path) -> str:
    for line in path.read_text().splitlines():
        text = line.lstrip("#").strip()
        if line.startswith("#") and text:
            return text
        if line.strip() and not line.startswith("#"):
            break
    return ""


def find_recipes() -> list[Recipe]:
    """Every recipe in :func:`recipe_dirs`, sorted by name (the first folder wins a name)."""
    found: dict[str, Recipe] = {}
    for root in recipe_dirs():
        for path in sorted(root.rglob("*.yaml")):
            rel = path.relative_to(root)
            if rel.parts[0] in SKIP_DIRS:
                continue
            name = rel.with_suffix("").as_posix()
            found.setdefault(name, Recipe(name, path, _summary(path)))
    return [found[name] for name in sorted(found)]


def resolve_recipe(name_or_path: str) -> Path:
    """A recipe path from a file path or a recipe name.

    Raises:
        FileNotFoundError: listing the known recipe names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    for recipe in find_recipes():
        if recipe.name == name_or_path.removesuffix(".yaml"):
            return recipe.path
    names = ", ".join(r.name for r in find_recipes()) or "none found"
    raise FileNotFoundError(
        f"recipe {name_or_path!r} is neither a file nor a known recipe name; known: {names} "
        "(see `nara recipes`)"
    )
