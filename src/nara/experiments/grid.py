"""Experiment grids: a YAML of methods × seeds × tasks (× an ablation axis), expanded into runs.

A grid file has these keys (see configs/experiments/methods.yaml for a commented example):

- ``name``: results go to ``<output>/<name>/<task>/<method>/<seed>/``.
- ``output``: the results root (default ``results``).
- ``tasks``: embedded task names, or ``{name: spec}`` where spec is a training data source or a
  mapping ``{source, eval, recipe}``: ``eval`` is the ``nara eval`` task scored on (default: the
  source, right for ``embedded:<task>``), ``recipe`` a partial recipe merged in for this task
  (e.g. its learning rate).
- ``seeds``: list of training seeds.
- ``recipe``: the shared ``nara train`` recipe (model, adapter, data, training sections); the
  adapter section holds fields shared by every method (only those a method has are used).
- ``methods``: ``{label: {method: <adapter method or "base">, <adapter fields>...}}``.
- ``ablation``: optional ``{variant: {<adapter fields>}}``, crossed with every method that has
  all of the variant's fields (label ``<method>-<variant>``).
- ``evaluation``: ``limit``, ``batch_size``, ``gen_length``, ``steps`` of the test-split scoring,
  and optionally the sampler's ``block_length``, ``threshold``, ``cache`` (none, prefix, dual)
  and ``cache_tolerance`` (as in ``nara eval``; docs/cache.md), ``sampler`` (llada, dream,
  mdlm; default: the model family's) and Dream's ``top_p``, ``top_k``, ``alg_temp``.
- ``profile``: ``enabled``, ``examples``, ``bins``, ``samples_per_bin``, ``seed`` of the noise
  profile drawn per task (first seed's adapters vs the base).
- ``lr_sweep``: optional ``{lrs: [...], seed: S}``, a per-method learning-rate sweep, so that no
  method is reported as not learning for want of a rate. Each (task, method label) first trains
  once per rate in ``lrs`` on seed ``S`` (default: the first of ``seeds``), with the shared recipe
  otherwise unchanged; the rate of the lowest best VALIDATION loss is chosen (the test split is
  never read to choose; ties go to the earlier rate; a diverged run, NaN, never wins); then every
  seed trains and is scored at that rate. The sweep run at the chosen rate IS the seed-``S`` run
  (same recipe, same folder), so it is evaluated, not trained again. Runs of a sweep grid live in
  ``<task>/<label>/lr<rate>/seed<S>/``; a sweep run is finished once its ``sweep.json`` exists
  (skipped when the grid runs again, a killed one resumes from its checkpoint like any run). The
  recipe must validate (``data.val_max_examples`` above 0).

Overrides are dotted ``key=value`` strings whose value is read as YAML:
``recipe.training.max_steps=10``, ``seeds=[0]``, ``methods.lora.r=4``, ``evaluation.limit=20``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BASE = "base"  # the method name of "no adapter, evaluation only"
KEYS = (
    "name",
    "output",
    "tasks",
    "seeds",
    "recipe",
    "methods",
    "ablation",
    "evaluation",
    "profile",
    "lr_sweep",
)
EVALUATION_DEFAULTS = {"limit": 100, "batch_size": 32, "gen_length": None, "steps": None}
# optional sampler settings of the evaluation: recorded only when given, so grids evaluated before
# they existed keep their settings (and resume)
EVALUATION_SAMPLER_KEYS = (
    "block_length",
    "threshold",
    "cache",
    "cache_tolerance",
    "sampler",
    "top_p",
    "top_k",
    "alg_temp",
)
PROFILE_DEFAULTS = {"enabled": True, "examples": 32, "bins": 10, "samples_per_bin": 1, "seed": 0}


@dataclass(frozen=True)
class RunSpec:
    """One run of a grid: where it goes and the ``nara train`` recipe it trains (None: base)."""

    task: str
    label: str
    seed: int
    run_dir: Path
    recipe: dict[str, Any] | None
    lr: float | None = None  # the learning rate of a sweep grid's run (None: the recipe's)

    @property
    def is_base(self) -> bool:
        return self.recipe is None


@dataclass
class Grid:
    """A validated experiment grid (see the module docstring for the keys)."""

    name: str
    output: Path
    tasks: dict[str, dict[str, Any]]
    seeds: list[int]
    recipe: dict[str, Any]
    methods: dict[str, dict[str, Any]]
    ablation: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    lr_sweep: dict[str, Any] | None = None  # {lrs, seed}: see the module docstring

    @property
    def root(self) -> Path:
        return self.output / self.name

    @property
    def default_lr(self) -> float:
        return float((self.recipe.get("training") or {}).get("lr", 3e-4))

    def labels(self) -> list[str]:
        """Method labels in grid order: each method, then its ablation variants."""
        return list(dict.fromkeys(label for label, _ in self._combinations()))

    def _combinations(self) -> list[tuple[str, dict[str, Any]]]:
        """(label, adapter fields) of every method × variant the method accepts."""
        from nara.training.adapters import adapter_fields

        out = []
        for label, spec in self.methods.items():
            method = spec["method"]
            if not self.ablation or method == BASE:
                out.append((label, dict(spec)))
                continue
            names = {f.name for f in adapter_fields(method)}
            for variant, fields in self.ablation.items():
                if set(fields) <= names:
                    out.append((f"{label}-{variant}", {**spec, **fields}))
        return out

    def _selected(self, only: list[str] | None) -> list[tuple[str, dict[str, Any]]]:
        """The combinations of the ``only`` labels (or method names), all without ``only``.

        Raises:
            ValueError: ``only`` names a label the grid does not have.
        """
        combos = self._combinations()
        known = [label for label, _ in combos]
        unknown = sorted(set(only or []) - set(known) - set(self.methods))
        if unknown:
            raise ValueError(f"--methods {unknown} are not in the grid; its methods: {known}")
        if not only:
            return combos
        return [(lb, spec) for lb, spec in combos if lb in only or lb.split("-", 1)[0] in only]

    def _run(self, task: str, label: str, spec: dict, seed: int, lr: float | None) -> RunSpec:
        """One run; ``lr`` (sweep grids only) sets the recipe's rate and the ``lr<rate>`` folder."""
        where = self.root / task / label
        if spec["method"] == BASE:
            return RunSpec(task, label, seed, where / f"seed{seed}", None)
        run_dir = where / f"seed{seed}" if lr is None else where / f"lr{lr:g}" / f"seed{seed}"
        recipe = self.run_recipe(spec, self.tasks[task], seed, run_dir)
        if lr is not None:
            recipe["training"]["lr"] = lr
        return RunSpec(task, label, seed, run_dir, recipe, lr)

    def runs(
        self, only: list[str] | None = None, lrs: dict[tuple[str, str], float] | None = None
    ) -> list[RunSpec]:
        """Every run, seed-major (all tasks and methods of the first seed, then the next, so a
        grid stopped early still holds whole seeds); the base runs once per task (greedy
        decoding: no seed effect).

        Args:
            only: method labels (or method names, for all their variants) to list.
            lrs: a sweep grid's chosen rate per ``(task, label)`` (see
                :func:`nara.experiments.runner.select_lrs`); a pair not in it is listed at the
                recipe's rate. Unused without ``lr_sweep``.

        Raises:
            ValueError: ``only`` names a label the grid does not have.
        """
        runs = []
        for task in self.tasks:
            for label, spec in self._selected(only):
                seeds = self.seeds[:1] if spec["method"] == BASE else self.seeds
                lr = None
                if self.lr_sweep:
                    lr = (lrs or {}).get((task, label), self.default_lr)
                runs += [self._run(task, label, spec, seed, lr) for seed in seeds]
        return sorted(runs, key=lambda run: self.seeds.index(run.seed))  # stable: keeps order

    def sweep_runs(self, only: list[str] | None = None) -> list[RunSpec]:
        """The learning-rate sweep's runs (none without ``lr_sweep``): every trained label of
        every task at every rate, on the sweep seed, task-major."""
        if not self.lr_sweep:
            return []
        seed = self.lr_sweep["seed"]
        return [
            self._run(task, label, spec, seed, float(lr))
            for task in self.tasks
            for label, spec in self._selected(only)
            if spec["method"] != BASE
            for lr in self.lr_sweep["lrs"]
        ]

    def run_recipe(
        self, spec: dict[str, Any], task: dict[str, Any], seed: int, run_dir: Path
    ) -> dict[str, Any]:
        """The ``nara train`` recipe of one run: shared recipe + the task's part + method fields,
        the task's data, the seed, the output folder and ``resume: latest`` (a killed run
        continues from its checkpoint)."""
        from nara.training.adapters import split_fields

        recipe = copy.deepcopy(self.recipe)
        for section, values in (task.get("recipe") or {}).items():
            recipe.setdefault(section, {}).update(values)
        shared, _ = split_fields(spec["method"], recipe.get("adapter") or {})
        recipe["adapter"] = {**shared, **spec}
        recipe.setdefault("data", {})["source"] = task["source"]
        training = recipe.setdefault("training", {})
        training["seed"] = seed
        training["resume"] = "latest"
        recipe["output_dir"] = str(run_dir)
        return recipe

    def check_data(self, only: list[str] | None = None) -> None:
        """Check the training data of every run (of the ``only`` methods), each distinct data
        section once: run before any model loads, so a missing file stops the grid at once.

        Raises:
            FileNotFoundError: a missing data file (see :func:`nara.training.data.check_sources`).
        """
        from nara.training.config import DataSection
        from nara.training.data import check_sources

        runs = [*self.sweep_runs(only), *self.runs(only)]
        recipes = [run.recipe for run in runs if run.recipe is not None]
        sections = {yaml.safe_dump(r.get("data") or {}): r.get("data") or {} for r in recipes}
        for data in sections.values():
            check_sources(DataSection.from_dict(data))

    def model_name(self) -> str:
        return str((self.recipe.get("model") or {}).get("name", "tiny"))


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``key = "a.b.c"``, creating mappings on the way."""
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"override {key!r}: {part!r} holds a value, not a mapping")
        node = child
    node[last] = value


def apply_overrides(
    raw: dict[str, Any], overrides: list[str], keys: tuple[str, ...] = KEYS
) -> dict[str, Any]:
    """Apply dotted ``key=value`` overrides (values parsed as YAML) to a copy of ``raw``.

    Raises:
        ValueError: an override without ``=``, or whose top-level key is not one of ``keys``
            (the grid keys by default).
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(
                f"override {item!r} is not key=value; e.g. recipe.training.max_steps=10"
            )
        key = key.strip()
        if key.split(".")[0] not in keys:
            raise ValueError(f"override {item!r}: unknown key; valid keys: {', '.join(keys)}")
        set_dotted(raw, key, yaml.safe_load(text) if text.strip() else None)
    return raw


def _as_list(value: Any) -> list:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _task_spec(name: str, spec: Any) -> dict[str, Any]:
    """``{source, eval, recipe}`` of a task given as a data source or a mapping."""
    spec = {"source": spec} if isinstance(spec, str) else dict(spec or {})
    if "source" not in spec or set(spec) - {"source", "eval", "recipe"}:
        raise ValueError(
            f"tasks.{name} must be a data source or a mapping with 'source' (and optionally "
            f"'eval', 'recipe'), got {spec!r}"
        )
    return {"source": str(spec["source"]), "eval": str(spec.get("eval", spec["source"])),
            "recipe": dict(spec.get("recipe") or {})}  # fmt: skip


def grid_from_dict(raw: dict[str, Any], *, default_name: str = "grid") -> Grid:
    """Validate a grid mapping (a loaded YAML) into a :class:`Grid`.

    Also validates every run's recipe against the ``nara train`` schema, so a bad key fails
    before any model is loaded.

    Raises:
        ValueError: unknown keys, no methods/tasks/seeds, a method without ``method``, or an
            invalid recipe (its ConfigError names the key).
    """
    raw = dict(raw or {})
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown grid key(s) {unknown}; grid keys: {', '.join(KEYS)}")
    tasks = raw.get("tasks") or []
    if not isinstance(tasks, dict):
        tasks = {str(t): f"embedded:{t}" for t in _as_list(tasks)}
    tasks = {str(name): _task_spec(name, spec) for name, spec in tasks.items()}
    methods = raw.get("methods") or {}
    for label, spec in methods.items():
        if not isinstance(spec, dict) or "method" not in spec:
            raise ValueError(
                f"methods.{label} must be a mapping with a 'method' key (an adapter method or "
                f"'{BASE}'), got {spec!r}"
            )
        if "-" in str(label):
            raise ValueError(f"method label {label!r} must not contain '-' (it marks variants)")
    grid = Grid(
        name=str(raw.get("name") or default_name),
        output=Path(str(raw.get("output") or "results")),
        tasks=tasks,
        seeds=[int(s) for s in _as_list(raw.get("seeds", [0]))],
        recipe=dict(raw.get("recipe") or {}),
        methods={str(k): dict(v) for k, v in methods.items()},
        ablation={str(k): dict(v or {}) for k, v in (raw.get("ablation") or {}).items()},
        evaluation=_evaluation(raw.get("evaluation") or {}),
        profile={**PROFILE_DEFAULTS, **(raw.get("profile") or {})},
    )
    if not grid.tasks or not grid.seeds or not grid.methods:
        raise ValueError("a grid needs at least one task, one seed and one method")
    from nara.training.config import RecipeConfig

    grid.lr_sweep = _lr_sweep(raw.get("lr_sweep"), grid)
    for run in [*grid.runs(), *grid.sweep_runs()]:
        if run.recipe is not None:
            RecipeConfig.from_dict(run.recipe)  # raises ConfigError naming the bad key
    return grid


def _lr_sweep(raw: Any, grid: Grid) -> dict[str, Any] | None:
    """The ``lr_sweep`` section checked: ``{lrs: [positive rates], seed: int}`` or None.

    Raises:
        ValueError: unknown keys, no rates, a rate that is not a positive number, or a recipe
            without validation (the sweep chooses by validation loss).
    """
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {"lrs", "seed"}:
        raise ValueError(
            f"lr_sweep must be a mapping with 'lrs' and optionally 'seed', got {raw!r}"
        )
    lrs = raw.get("lrs")
    if not isinstance(lrs, list) or not lrs:
        raise ValueError(
            f"lr_sweep.lrs must be a non-empty list of rates, e.g. [1e-3, 3e-3], got {lrs!r}"
        )
    for lr in lrs:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
            raise ValueError(f"lr_sweep.lrs: {lr!r} is not a positive learning rate; e.g. 3e-3")
    if len({float(lr) for lr in lrs}) != len(lrs):
        raise ValueError(f"lr_sweep.lrs {lrs} repeats a rate; list each once")
    if (grid.recipe.get("data") or {}).get("val_max_examples", 1) == 0:
        raise ValueError(
            "lr_sweep chooses each method's rate by validation loss, but recipe.data."
            "val_max_examples is 0; set it above 0 (e.g. 64) or remove lr_sweep"
        )
    seed = raw.get("seed", grid.seeds[0])
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"lr_sweep.seed must be an integer seed, got {seed!r}")
    return {"lrs": [float(lr) for lr in lrs], "seed": seed}


def _evaluation(raw: dict[str, Any]) -> dict[str, Any]:
    """The evaluation section with its defaults, its keys and sampler settings checked."""
    from nara.diffusion.dream_sampling import check_sampler_values
    from nara.diffusion.sampling import check_settings

    unknown = sorted(set(raw) - set(EVALUATION_DEFAULTS) - set(EVALUATION_SAMPLER_KEYS))
    if unknown:
        keys = ", ".join([*EVALUATION_DEFAULTS, *EVALUATION_SAMPLER_KEYS])
        raise ValueError(f"unknown evaluation key(s) {unknown}; evaluation keys: {keys}")
    ev = {**EVALUATION_DEFAULTS, **raw}
    if ev.get("cache") == "none":
        ev["cache"] = None
    check_settings(
        ev["gen_length"],
        ev["steps"],
        ev.get("block_length"),
        threshold=ev.get("threshold"),
        cache=ev.get("cache"),
        cache_tolerance=ev.get("cache_tolerance"),
    )
    check_sampler_values(ev.get("sampler"), ev.get("top_p"), ev.get("top_k"), ev.get("alg_temp"))
    return ev


def load_grid(path: str | Path, overrides: list[str] = ()) -> Grid:
    """Load a grid YAML and apply overrides; the grid name defaults to the file name.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: see :func:`grid_from_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"experiment grid {str(path)!r} not found; e.g. configs/experiments/methods.yaml"
        )
    raw = yaml.safe_load(path.read_text()) or {}
    return grid_from_dict(apply_overrides(raw, list(overrides)), default_name=path.stem)
