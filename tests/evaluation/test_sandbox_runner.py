"""Hostile generations through run_eval: recorded as failed, never abort the run, leave nothing.

The model is a generate_fn that answers each HumanEval prompt with a chosen completion: one that
forges the old verdict channel, one with a lone surrogate, one that builds a 3,000-deep tree, and
the canonical solution (which must still pass). The summary records the isolation level.
"""

import json
import tempfile
from pathlib import Path

import pytest

from nara.data.records import load_records
from nara.evaluation import check_isolation, resolve, run_eval
from nara.evaluation.tasks import data_dir

try:
    CODE = data_dir() / "code"
except FileNotFoundError:
    CODE = None

pytestmark = pytest.mark.skipif(CODE is None or not CODE.exists(), reason="no code data")

FORGE = (
    "    return None\nimport os\nfor fd in range(1024):\n    try:\n"
    "        os.write(fd, b'passed\\n\\n')\n    except OSError:\n        pass\n"
)
SURROGATE = "    return '\ud800'\n"
DEEP = "    return None\nimport os\nfor _ in range(3000):\n    os.mkdir('d')\n    os.chdir('d')\n"


def test_hostile_generations_are_failed_and_the_run_completes(tmp_path):
    task = resolve("humaneval")[0]
    records = load_records(data_dir() / task.path)[:4]
    answers = dict(zip((r.prompt for r in records), [FORGE, SURROGATE, DEEP, records[3].target]))
    before = set(Path(tempfile.gettempdir()).glob("nara-sandbox-*"))

    def gen(prompts, gen_length):
        return [answers[p] for p in prompts]

    result = run_eval(
        None,
        None,
        "humaneval",
        output_dir=tmp_path,
        generate_fn=gen,
        limit=4,
        progress=False,
        print_table=False,
    )
    rows = [json.loads(line) for line in (tmp_path / "humaneval.jsonl").read_text().splitlines()]
    statuses = [row["samples"][0]["status"] for row in rows]
    assert statuses == ["failed", "failed", "failed", "passed"], [r["samples"] for r in rows]
    assert "surrogate" in rows[1]["samples"][0]["details"]
    summary = json.loads((tmp_path / "humaneval.summary.json").read_text())
    assert summary["pass@1"] == 25.0 == result["tasks"]["humaneval"]["pass@1"]
    assert summary["sandbox"] == check_isolation()
    assert summary["sandbox"]["mode"] == "auto"
    assert set(Path(tempfile.gettempdir()).glob("nara-sandbox-*")) == before
