"""Find recipes on disk: the list comes from the folders, never from a hand-kept registry.

Searched, in order: the folders in ``$NARA_RECIPES`` (``os.pathsep``-separated), ``./configs``,
and the ``configs/`` folder of a source checkout of nara. A recipe's name is its path under its
folder without ``.yaml`` (``demo``, ``llada8b/math_nara``); ``configs/accelerate/`` holds
Accelerate launch configs and ``configs/experiments/`` the grids of ``nara experiment``:
neither is a training recipe, so both are skipped. A recipe with an ``rl`` section is run by
``nara rl``, the others by ``nara train`` (:attr:`Recipe.command`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SKIP_DIRS = ("accelerate", "experiments")


@dataclass(frozen=True)
class Recipe:
    """A recipe file: its name, path, the first line of its header comment and the command
    that runs it (``train`` or ``rl``)."""

    name: str
    path: Path
    summary: str
    command: str = "train"


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


def _command(path: Path) -> str:
    """``rl`` for a recipe with a top-level ``rl:`` section, else ``train``."""
    has_rl = any(line.startswith("rl:") for line in path.read_text().splitlines())
    return "rl" if has_rl else "train"


def find_recipes(command: str | None = "train") -> list[Recipe]:
    """Every recipe in :func:`recipe_dirs` run by ``command`` (``train``, ``rl``; None: all),
    sorted by name (the first folder wins a name)."""
    found: dict[str, Recipe] = {}
    for root in recipe_dirs():
        for path in sorted(root.rglob("*.yaml")):
            rel = path.relative_to(root)
            if rel.parts[0] in SKIP_DIRS:
                continue
            name = rel.with_suffix("").as_posix()
            found.setdefault(name, Recipe(name, path, _summary(path), _command(path)))
    return [found[n] for n in sorted(found) if command in (None, found[n].command)]


def resolve_recipe(name_or_path: str, command: str = "train") -> Path:
    """A recipe path from a file path or the name of a recipe that ``command`` runs.

    Raises:
        FileNotFoundError: listing the known recipe names (or naming the command that runs
            a recipe of another command).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    for recipe in find_recipes(None):
        if recipe.name == name_or_path.removesuffix(".yaml"):
            if recipe.command != command:
                raise FileNotFoundError(
                    f"recipe {recipe.name!r} is run by nara {recipe.command}, not nara "
                    f"{command}: nara {recipe.command} {recipe.name}"
                )
            return recipe.path
    names = ", ".join(r.name for r in find_recipes(command)) or "none found"
    raise FileNotFoundError(
        f"recipe {name_or_path!r} is neither a file nor a known recipe name; known: {names} "
        "(see `nara recipes`)"
    )
