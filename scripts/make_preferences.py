"""Write preference pairs for `nara rl` with rl.algorithm=vrpo from an embedded task whose
answers end in a number: chosen = the gold answer, rejected = the same answer with that number
changed by 1 to 3 (a seeded choice, never negative).

    python scripts/make_preferences.py                                  # runs/prefs/arithmetic.jsonl
    python scripts/make_preferences.py --split test --out runs/prefs/arithmetic_test.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

LAST_NUMBER = re.compile(r"(-?\d+)(?!.*\d)", re.S)


def wrong_answer(answer: str, rng: random.Random) -> str:
    """``answer`` with its last number moved by ±1..3 (up when moving down would go below 0).

    Raises:
        ValueError: the answer has no number.
    """
    found = LAST_NUMBER.search(answer)
    if found is None:
        raise ValueError(f"answer {answer!r} has no number to change; use a task with numbers")
    value, step = int(found.group(1)), rng.randint(1, 3)
    wrong = value - step if value - step >= 0 and rng.random() < 0.5 else value + step
    return answer[: found.start()] + str(wrong) + answer[found.end() :]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="arithmetic", help="embedded task (default arithmetic)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", type=Path, default=Path("runs/prefs/arithmetic.jsonl"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from nara.data.embedded import load_embedded

    rng = random.Random(args.seed)
    rows = [
        {"prompt": r["prompt"], "chosen": r["answer"], "rejected": wrong_answer(r["answer"], rng)}
        for r in load_embedded(args.task, args.split)
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"{len(rows)} pairs written to {args.out}")


if __name__ == "__main__":
    main()
