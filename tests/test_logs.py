"""Logs fit where they go: a bar on a terminal, plain periodic lines in a file or pipe (step,
loss, λ, lr, tokens/s, ETA; no carriage returns), no loading bar for the embedded model."""

from __future__ import annotations

import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "training"))
from training_support import arith_files, tiny_model_dir  # noqa: E402,F401  (fixtures)

from nara.cli import main  # noqa: E402
from nara.progress import Progress, format_duration  # noqa: E402


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_every_tenth_with_eta_and_no_carriage_returns():
    stream, now = io.StringIO(), [0.0]
    progress = Progress(20, desc="train", stream=stream, clock=lambda: now[0])
    for _ in range(20):
        now[0] += 3.0
        progress.update(1, loss="0.5")
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [line.split()[1] for line in lines] == [f"{k}/20" for k in range(2, 21, 2)]
    # 2 updates in 6 s: 18 left at 3 s each
    assert lines[0] == "train 2/20 loss 0.5 elapsed 6s ETA 54s"
    assert lines[-1] == "train 20/20 loss 0.5 elapsed 1m00s"


def test_uneven_updates_and_a_resumed_start_still_line_up():
    stream = io.StringIO()
    progress = Progress(100, initial=35, desc="eval", stream=stream, every=10, clock=lambda: 1.0)
    for _ in range(8):
        progress.update(8)  # 43, 51, ..., 99: a line when a tenth is crossed
    done = [int(line.split()[1].split("/")[0]) for line in stream.getvalue().splitlines()]
    assert done == [43, 51, 67, 75, 83, 91]
    progress.update(1)
    assert stream.getvalue().splitlines()[-1].startswith("eval 100/100 ")  # and the last


def test_a_terminal_gets_the_bar_and_disabled_shows_nothing():
    terminal = Terminal()
    bar = Progress(4, desc="train", stream=terminal)
    bar.update(4, loss="1")
    bar.close()
    assert bar.bar is not None and "\r" in terminal.getvalue()
    quiet = io.StringIO()
    Progress(4, stream=quiet, enabled=False).update(4)
    assert quiet.getvalue() == ""
    assert format_duration(3725) == "1h02m" and format_duration(65) == "1m05s"


def test_train_to_a_file_writes_plain_lines(tiny_model_dir, arith_files, tmp_path, capsys):  # noqa: F811
    train_file, _ = arith_files
    args = [
        "train",
        "demo",
        f"model.name={tiny_model_dir}",
        f"data.source={train_file}",
        "data.val_fraction=0.1",
        "data.max_length=16",
        "adapter.method=lora",
        "training.max_steps=4",
        "training.batch_size=4",
        f"output_dir={tmp_path / 'run'}",
    ]
    assert main(args) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert "\r" not in err and "Loading weights" not in err
    lines = [line for line in err.splitlines() if line.startswith("train ")]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]
    for key in ("loss", "λ", "lr", "tok_s", "elapsed"):
        assert f" {key} " in lines[0]
    assert "ETA" in lines[0] and "ETA" not in lines[-1]
    assert "val_loss" in captured.err + captured.out


def test_embedded_model_loads_without_a_progress_bar(capsys):
    from nara.models import load_model

    load_model("tiny")
    captured = capsys.readouterr()
    assert "Loading weights" not in captured.err + captured.out
