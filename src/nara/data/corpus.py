"""The procedural pre-training corpus of the embedded tiny model: three families, fully seeded.

Every example is a ``(prompt, answer)`` pair whose prompt is ``render_prompt(instruction)``, the
same format the embedded fine-tuning tasks (:mod:`nara.data.embedded`) use, so pre-training,
fine-tuning and evaluation see one layout. The families mirror the NaRA paper's benchmarks:

- ``commonsense``: multiple choice over a small hand-written world of objects (weight, size,
  category, material, place, use), in LLM-Adapters answer formats: BoolQ-like ``true/false``,
  PIQA-like ``solution1/solution2``, ARC-like ``answer1..answer4``.
- ``arithmetic``: word problems with one addition or subtraction of numbers 1-10; the answer is a
  number. Half the corpus: it is the skill a model this small learns slowest.
- ``programs``: predict what a short Python snippet prints (the true output is computed by
  running the generated snippet), or complete a one-line function from its docstring.

The embedded tasks ask for the same skills in new templates and answer formats (WinoGrande-style
``option1/option2`` questions, word problems answered ``The answer is N.``, the value of a variable as
``name = value``); those templates never occur here.
"""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Callable
from dataclasses import dataclass

FAMILIES = ("commonsense", "arithmetic", "programs")
MIX = ("arithmetic", "commonsense", "arithmetic", "programs")  # one cycle of the corpus


def render_prompt(instruction: str) -> str:
    """The one prompt format of the embedded model: ``Question: ...`` then ``Answer:`` on its own line.

    The answer follows directly after the final newline (tokenized separately, then EOS).
    """
    return f"Question: {instruction}\nAnswer:\n"


@dataclass(frozen=True)
class Thing:
    """An object of the toy world. mass in grams, size (longest side) in centimetres."""

    name: str
    category: str
    mass: float
    size: float
    material: str
    place: str
    use: str | None = None
    alive: bool = False
    flies: bool = False
    edible: bool = False


# fmt: off
WORLD: tuple[Thing, ...] = (
    Thing("hammer", "tool", 600, 30, "metal", "garage", "drive a nail into wood"),
    Thing("saw", "tool", 700, 60, "metal", "garage", "cut a wooden board"),
    Thing("screwdriver", "tool", 150, 20, "metal", "garage", "turn a screw"),
    Thing("shovel", "tool", 2000, 120, "metal", "garden", "dig a hole"),
    Thing("rake", "tool", 1200, 150, "wood", "garden", "gather fallen leaves"),
    Thing("scissors", "tool", 80, 18, "metal", "office", "cut a sheet of paper"),
    Thing("wrench", "tool", 400, 25, "metal", "garage", "tighten a bolt"),
    Thing("ladder", "tool", 8000, 300, "metal", "garage", "reach a high shelf"),
    Thing("broom", "tool", 700, 130, "wood", "kitchen", "sweep the floor"),
    Thing("knife", "tool", 100, 25, "metal", "kitchen", "slice bread"),
    Thing("spoon", "tool", 40, 15, "metal", "kitchen", "stir soup"),
    Thing("pencil", "tool", 6, 18, "wood", "office", "write a note"),
    Thing("stapler", "tool", 250, 15, "metal", "office", "fasten papers together"),
    Thing("umbrella", "tool", 400, 90, "cloth", "hallway", "stay dry in the rain"),
    Thing("bucket", "tool", 900, 35, "plastic", "garden", "carry water"),
    Thing("candle", "tool", 150, 20, "wax", "kitchen", "light a dark room"),
    Thing("rope", "tool", 1500, 1000, "cloth", "garage", "tie a boat to a dock"),
    Thing("towel", "clothing", 500, 120, "cloth", "bathroom", "dry your hands"),
    Thing("sock", "clothing", 40, 25, "cloth", "bedroom", "keep a foot warm"),
    Thing("coat", "clothing", 1500, 100, "cloth", "hallway", "keep warm in winter"),
    Thing("hat", "clothing", 100, 30, "cloth", "hallway", "shade your head from the sun"),
    Thing("glove", "clothing", 60, 25, "leather", "hallway", "protect a hand"),
    Thing("boot", "clothing", 900, 30, "leather", "hallway", "walk through mud"),
    Thing("chair", "furniture", 6000, 90, "wood", "kitchen", "sit at a table"),
    Thing("table", "furniture", 30000, 180, "wood", "kitchen", "hold plates during dinner"),
    Thing("bed", "furniture", 50000, 200, "wood", "bedroom", "sleep at night"),
    Thing("sofa", "furniture", 45000, 210, "cloth", "living room", "relax with friends"),
    Thing("lamp", "furniture", 2000, 50, "metal", "bedroom", "read at night"),
    Thing("mirror", "furniture", 3000, 60, "glass", "bathroom", "see your own face"),
    Thing("bookshelf", "furniture", 25000, 190, "wood", "living room", "store many books"),
    Thing("car", "vehicle", 1200000, 450, "metal", "street", "drive to another city"),
    Thing("bicycle", "vehicle", 12000, 170, "metal", "street", "ride to school"),
    Thing("truck", "vehicle", 8000000, 800, "metal", "street", "move heavy boxes far away"),
    Thing("boat", "vehicle", 500000, 600, "wood", "lake", "cross a lake"),
    Thing("airplane", "vehicle", 40000000, 3500, "metal", "airport", "fly across the ocean"),
    Thing("skateboard", "vehicle", 3000, 80, "wood", "street", "roll down a smooth path"),
    Thing("apple", "food", 150, 8, "fruit", "kitchen", edible=True),
    Thing("banana", "food", 120, 18, "fruit", "kitchen", edible=True),
    Thing("watermelon", "food", 5000, 35, "fruit", "kitchen", edible=True),
    Thing("grape", "food", 5, 2, "fruit", "kitchen", edible=True),
    Thing("bread", "food", 500, 30, "dough", "kitchen", edible=True),
    Thing("egg", "food", 60, 6, "shell", "kitchen", edible=True),
    Thing("cheese", "food", 300, 12, "milk", "kitchen", edible=True),
    Thing("carrot", "food", 70, 18, "vegetable", "garden", edible=True),
    Thing("pumpkin", "food", 6000, 40, "vegetable", "garden", edible=True),
    Thing("dog", "animal", 20000, 90, "fur", "house", alive=True),
    Thing("cat", "animal", 4000, 50, "fur", "house", alive=True),
    Thing("horse", "animal", 500000, 240, "hair", "farm", alive=True),
    Thing("cow", "animal", 700000, 250, "hair", "farm", alive=True),
    Thing("mouse", "animal", 20, 9, "fur", "house", alive=True),
    Thing("elephant", "animal", 5000000, 600, "skin", "zoo", alive=True),
    Thing("sparrow", "animal", 30, 15, "feathers", "garden", alive=True, flies=True),
    Thing("eagle", "animal", 5000, 90, "feathers", "mountain", alive=True, flies=True),
    Thing("duck", "animal", 1200, 55, "feathers", "lake", alive=True, flies=True),
    Thing("fish", "animal", 500, 30, "scales", "lake", alive=True),
    Thing("ant", "animal", 0.003, 0.5, "shell", "garden", alive=True),
    Thing("bee", "animal", 0.1, 1.5, "fur", "garden", alive=True, flies=True),
    Thing("butterfly", "animal", 0.5, 8, "wings", "garden", alive=True, flies=True),
    Thing("tree", "plant", 2000000, 1500, "wood", "forest", alive=True),
    Thing("rose", "plant", 30, 50, "petals", "garden", alive=True),
    Thing("cactus", "plant", 3000, 60, "spines", "desert", alive=True),
    Thing("feather", "object", 0.1, 12, "feathers", "farm"),
    Thing("coin", "object", 5, 2, "metal", "wallet"),
    Thing("book", "object", 600, 25, "paper", "library"),
    Thing("rock", "object", 3000, 20, "stone", "mountain"),
    Thing("pillow", "object", 700, 60, "cloth", "bedroom"),
    Thing("bottle", "object", 400, 30, "glass", "kitchen"),
    Thing("balloon", "object", 3, 30, "rubber", "party", flies=True),
)
# fmt: on

CATEGORIES = sorted({t.category for t in WORLD})
MATERIALS = sorted({t.material for t in WORLD})
PLACES = sorted({t.place for t in WORLD})
TOOLS = tuple(t for t in WORLD if t.use)

NAMES = ("Tom", "Anna", "Ben", "Lucy", "Omar", "Mia", "Sam", "Nora", "Leo", "Ivy", "Max", "Zoe",
         "Eli", "Ruth", "Jack", "Lily", "Raj", "Emma", "Noah", "Sara")  # fmt: skip
ITEMS = ("apple", "marble", "sticker", "pencil", "cookie", "card", "stamp", "shell", "coin",
         "book", "flower", "balloon", "egg", "toy", "ribbon", "button")  # fmt: skip


def article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def distinct(rng: random.Random, pool: tuple | list, k: int, key: Callable | None = None) -> list:
    """k items of pool with pairwise distinct ``key`` values (rejection sampling)."""
    key = key or (lambda x: x)
    while True:
        picked = rng.sample(list(pool), k)
        if len({key(p) for p in picked}) == k:
            return picked


def well_separated(a: Thing, b: Thing, attr: str, ratio: float = 2.0) -> bool:
    """True if the two things differ clearly (by ``ratio``) in ``attr``: no borderline facts."""
    x, y = getattr(a, attr), getattr(b, attr)
    return max(x, y) >= ratio * min(x, y)


def choices_text(label: str, options: list[str]) -> str:
    return "\n".join(f"{label}{i}: {o}" for i, o in enumerate(options, 1))


# ---------------------------------------------------------------- commonsense (pre-training)

COMPARATIVES = {  # attribute -> (word when larger, word when smaller)
    "mass": ("heavier", "lighter"),
    "size": ("bigger", "smaller"),
}


def boolq_example(rng: random.Random) -> tuple[str, str]:
    """A true/false question about one fact of the world (BoolQ answer format)."""
    kind = rng.choice(("compare", "compare", "category", "material", "place", "ability"))
    a = rng.choice(WORLD)
    if kind == "compare":
        attr = rng.choice(tuple(COMPARATIVES))
        b = rng.choice([t for t in WORLD if well_separated(a, t, attr)])
        larger = rng.random() < 0.5
        word = COMPARATIVES[attr][0 if larger else 1]
        truth = (getattr(a, attr) > getattr(b, attr)) == larger
        question = f"Is {article(a.name)} {word} than {article(b.name)}?"
    elif kind == "category":
        cat = a.category if rng.random() < 0.5 else rng.choice(CATEGORIES)
        truth = cat == a.category
        question = f"Is {article(a.name)} a kind of {cat}?"
    elif kind == "material":
        mat = a.material if rng.random() < 0.5 else rng.choice(MATERIALS)
        truth = mat == a.material
        question = f"Is {article(a.name)} made of {mat}?"
    elif kind == "place":
        place = a.place if rng.random() < 0.5 else rng.choice(PLACES)
        truth = place == a.place
        question = f"Would you usually find {article(a.name)} in the {place}?"
    else:
        ability, truth = rng.choice(
            (("fly", a.flies), ("be eaten", a.edible), ("grow and breathe", a.alive))
        )
        question = f"Can {article(a.name)} {ability}?"
    instruction = f"{question}\nAnswer format: true/false"
    return instruction, "true" if truth else "false"


def piqa_example(rng: random.Random) -> tuple[str, str]:
    """Pick the solution that reaches a goal (PIQA answer format)."""
    good = rng.choice(TOOLS)
    bad = rng.choice([t for t in WORLD if t.use != good.use and t.category != good.category])
    options = [good, bad]
    rng.shuffle(options)
    goal = f"Goal: {good.use}"
    sols = choices_text("Solution", [f"use {article(t.name)}" for t in options])
    instruction = f"{goal}\n{sols}\nAnswer format: solution1/solution2"
    return instruction, f"solution{options.index(good) + 1}"


def arc_example(rng: random.Random) -> tuple[str, str]:
    """Four-way multiple choice about the world (ARC answer format)."""
    kind = rng.choice(("category", "extreme", "use", "place", "material"))
    if kind == "category":
        things = distinct(rng, WORLD, 4, key=lambda t: t.category)
        target = things[0]
        question = f"Which of these is a kind of {target.category}?"
        options = [t.name for t in things]
    elif kind == "extreme":
        attr = rng.choice(tuple(COMPARATIVES))
        things = distinct(rng, WORLD, 4, key=lambda t: round(getattr(t, attr), 3))
        sign = rng.choice((1, -1))
        target = max(things, key=lambda t: sign * getattr(t, attr))
        word = COMPARATIVES[attr][0 if sign > 0 else 1][:-2]  # heavier -> heavi, ...
        question = f"Which of these is the {word}est?"
        options = [t.name for t in things]
    elif kind == "use":
        things = distinct(rng, TOOLS, 4, key=lambda t: t.use)
        target = things[0]
        question = f"Which of these is used to {target.use}?"
        options = [t.name for t in things]
    elif kind == "place":
        target = rng.choice(WORLD)
        places = [target.place, *rng.sample([p for p in PLACES if p != target.place], 3)]
        question = f"Where would you most likely find {article(target.name)}?"
        options, target = places, None
    else:
        target = rng.choice(WORLD)
        mats = [target.material, *rng.sample([m for m in MATERIALS if m != target.material], 3)]
        question = f"What is {article(target.name)} usually made of?"
        options, target = mats, None
    answer = options[0] if target is None else target.name
    rng.shuffle(options)
    instruction = (
        f"{question}\n{choices_text('Answer', options)}\n"
        "Answer format: answer1/answer2/answer3/answer4"
    )
    return instruction, f"answer{options.index(answer) + 1}"


# ---------------------------------------------------------------- arithmetic (pre-training)


def arithmetic_example(rng: random.Random) -> tuple[str, str]:
    """A one-step word problem with addition or subtraction; the answer is the number."""
    name, other = distinct(rng, NAMES, 2)
    item = rng.choice(ITEMS)
    a, b = rng.randint(1, 10), rng.randint(1, 10)  # small numbers: learnable at this size
    templates = (
        (f"{name} has {a} {item}s. {name} gets {b} more. How many {item}s does {name} have now?", a + b),
        (f"{name} picked {a} {item}s in the morning and {b} in the afternoon. How many {item}s did {name} pick in total?", a + b),
        (f"There are {a} {item}s in one box and {b} {item}s in another box. How many {item}s are there altogether?", a + b),
        (f"{name} had {a + b} {item}s and gave {b} to {other}. How many {item}s does {name} have left?", a),
        (f"A basket holds {a + b} {item}s. {name} takes out {a}. How many {item}s are still in the basket?", b),
        (f"{name} has {a + b} {item}s and {other} has {b}. How many more {item}s does {name} have than {other}?", a),
        (f"What is {a} plus {b}?", a + b),
        (f"What is {a + b} minus {a}?", b),
    )  # fmt: skip
    question, value = rng.choice(templates)
    return question, str(value)


# ---------------------------------------------------------------- programs (pre-training)

_SAFE_BUILTINS = {"len": len, "max": max, "min": min, "sorted": sorted, "abs": abs, "sum": sum,
                  "str": str, "list": list, "range": range}  # fmt: skip


def run_snippet(code: str) -> str:
    """What a generated snippet prints, by running it with a few safe builtins only.

    Only called on code this module (or :mod:`nara.data.embedded`) generated itself.
    """
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"__builtins__": {**_SAFE_BUILTINS, "print": print}})
    return out.getvalue().strip()


WORDS = ("cat", "sun", "tree", "blue", "code", "map", "bird", "rain", "star", "milk", "box", "red")
VARS = ("x", "y", "z", "a", "b", "n", "k", "m")


def _small_list(rng: random.Random, lo: int = 0, hi: int = 9) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(rng.randint(2, 5))]


def snippet_code(rng: random.Random) -> str:
    """A short print statement (sometimes after assignments) over ints, lists and strings."""
    a, b, c = rng.randint(0, 20), rng.randint(0, 20), rng.randint(1, 9)
    xs, w1, w2 = _small_list(rng), rng.choice(WORDS), rng.choice(WORDS)
    v, u = distinct(rng, VARS, 2)
    options = (
        f"print({a} + {b})",
        f"print({a} - {b})",
        f"print({rng.randint(0, 9)} * {rng.randint(0, 9)})",
        f"print({a} * {c})",
        f"print({a} > {b})",
        f"print({a} == {b})",
        f"print(max({a}, {b}, {c}))",
        f"print(min({a}, {b}, {c}))",
        f"print(len({xs}))",
        f"print({xs}[{rng.randrange(len(xs))}])",
        f"print({xs}[-1])",
        f"print(sum({xs}))",
        f"print(sorted({xs}))",
        f"print({xs} + [{c}])",
        f"print('{w1}' + '{w2}')",
        f"print('{w1}'.upper())",
        f"print(len('{w1}{w2}'))",
        f"print(abs({a - b}))",
        f"{v} = {a}\nprint({v} + {c})",
        f"{v} = {a}\n{u} = {v} * {rng.randint(0, 5)}\nprint({u})",
        f"{v} = {xs}\nprint({v}[0] + {v}[-1])",
        f"{v} = '{w1}'\nprint({v} + {v})",
    )
    return rng.choice(options)


def output_example(rng: random.Random) -> tuple[str, str]:
    code = snippet_code(rng)
    return f"What does this Python code print?\n{code}", run_snippet(code)


FUNCTION_SPECS = (  # (arguments, docstring, body); {k} is filled with a small constant
    ("x", "Return x plus {k}.", "return x + {k}"),
    ("x", "Return x minus {k}.", "return x - {k}"),
    ("x", "Return x times {k}.", "return x * {k}"),
    ("x", "Return the square of x.", "return x * x"),
    ("x, y", "Return the larger of x and y.", "return max(x, y)"),
    ("x, y", "Return the smaller of x and y.", "return min(x, y)"),
    ("x, y", "Return the sum of x and y.", "return x + y"),
    ("x, y", "Return x minus y.", "return x - y"),
    ("xs", "Return the first element of the list xs.", "return xs[0]"),
    ("xs", "Return the last element of the list xs.", "return xs[-1]"),
    ("xs", "Return the length of xs.", "return len(xs)"),
    ("xs", "Return the total of the numbers in xs.", "return sum(xs)"),
    ("xs", "Return xs in sorted order.", "return sorted(xs)"),
    ("s", "Return the string s in upper case.", "return s.upper()"),
    ("s", "Return the string s repeated twice.", "return s + s"),
    ("x, y", "Return True if x is greater than y.", "return x > y"),
    ("x, y", "Return True if x equals y.", "return x == y"),
    ("x", "Return the absolute value of x.", "return abs(x)"),
)
FUNCTION_NAMES = ("f", "g", "helper", "compute", "solve", "calc", "work", "step", "apply", "run")


def function_example(rng: random.Random) -> tuple[str, str]:
    """Complete a one-line function body from its signature and docstring."""
    args, doc, body = rng.choice(FUNCTION_SPECS)
    k = rng.randint(1, 9)
    head = f'def {rng.choice(FUNCTION_NAMES)}({args}):\n    """{doc.format(k=k)}"""'
    return f"Complete the body of this Python function.\n{head}", body.format(k=k)


# ---------------------------------------------------------------- the corpus

GENERATORS: dict[str, tuple[Callable[[random.Random], tuple[str, str]], ...]] = {
    "commonsense": (boolq_example, piqa_example, arc_example),
    "arithmetic": (arithmetic_example,),
    "programs": (output_example, output_example, function_example),
}


# The embedded model's corpus: scripts/build_tiny.py's defaults (its model card records them).
EMBEDDED_CORPUS_EXAMPLES = 200_000


def pretraining_corpus(
    num_examples: int = EMBEDDED_CORPUS_EXAMPLES, seed: int = 0
) -> list[dict[str, str]]:
    """The pre-training corpus: ``num_examples`` records ``{prompt, answer, family}``.

    Families are drawn in the proportions of ``MIX`` (arithmetic half, the others a quarter
    each); the same (num_examples, seed) always gives the same
    list. Prompts are already rendered with :func:`render_prompt`.
    """
    rng = random.Random(seed)
    records = []
    for i in range(num_examples):
        family = MIX[i % len(MIX)]
        instruction, answer = rng.choice(GENERATORS[family])(rng)
        records.append({"prompt": render_prompt(instruction), "answer": answer, "family": family})
    return records
