"""`python -m core` (the `loupe` script): the JSON contract and the exit-2 refusals, run as real subprocesses."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image

import core.__main__
from tests.image_factory import encode, jpeg_with_orientation

ROOT = Path(__file__).resolve().parent.parent


def _core(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ask_json_is_exactly_the_answer_record(tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(jpeg_with_orientation(6))
    result = _core("ask", str(image), "图中有什么？", "--max-new-tokens", "16", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)  # exactly one JSON object, nothing else on stdout
    assert {"text", "truncated", "input_tokens", "output_tokens", "tokens_per_s", "timings_s",
            "peak_memory_gb", "image_notes", "model"} <= set(record)
    assert set(record["timings_s"]) == {"queue", "preprocess", "vision", "prefill", "decode", "total"}
    assert record["output_tokens"] == 16 and record["truncated"] is True
    assert record["image_notes"] == ["rotated 90° from EXIF (orientation 6)"]
    assert record["peak_memory_gb"]["cpu"] > 0 and record["model"] == "demo-llava-v2"


def test_ask_streams_text_then_timings(tmp_path: Path) -> None:
    image = tmp_path / "p.png"
    image.write_bytes(encode(Image.new("RGB", (40, 40)), "PNG"))
    result = _core("ask", str(image), "What is it?", "--max-new-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert "tokens/s" in result.stdout and "prefill" in result.stdout


def _refusal(result: subprocess.CompletedProcess, phrase: str) -> None:
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and phrase in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_refusals_exit_2_with_one_error_line(tmp_path: Path) -> None:
    good = tmp_path / "ok.png"
    good.write_bytes(encode(Image.new("RGB", (40, 40)), "PNG"))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    _refusal(_core("ask", str(good), "长" * 201), "201 characters")
    _refusal(_core("ask", str(text), "hi"), "not an image")
    _refusal(_core("ask", str(tmp_path / "missing.jpg"), "hi"), "No image file")
    _refusal(_core("ask", str(good), "hi", "--model", str(tmp_path / "no-model")), "never downloads")
    _refusal(_core("prepare", str(text)), "not an image")
    _refusal(_core("frobnicate"), "invalid choice")


def test_prepare_json_and_out(tmp_path: Path) -> None:
    source = tmp_path / "big.jpg"
    source.write_bytes(encode(Image.new("RGB", (4032, 3024)), "JPEG"))
    out = tmp_path / "prepared.png"
    result = _core("prepare", str(source), "--json", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"width": 1280, "height": 960, "notes": ["resized 4032×3024 → 1280×960"]}
    assert Image.open(out).size == (1280, 960)
    narrow = _core("prepare", str(source), "--max-width", "640", "--json")
    assert json.loads(narrow.stdout)["width"] == 640


def test_the_loupe_script_is_python_m_core(capsys) -> None:
    """pyproject.toml's `loupe` console script is core.__main__:main, whose help lists the five commands."""
    target = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]["loupe"]
    module, _, name = target.partition(":")
    assert getattr(importlib.import_module(module), name) is core.__main__.main
    with pytest.raises(SystemExit) as exited:
        core.__main__.main(["--help"])
    assert exited.value.code == 0
    listed = capsys.readouterr().out
    commands = listed[listed.index("{") + 1:listed.index("}")]
    assert sorted(commands.split(",")) == ["ask", "gpus", "plan", "prepare", "serve"]
    for command in ("ask", "prepare", "plan", "gpus", "serve"):
        assert f"\n    {command} " in listed  # each with its one-line help


def test_ask_takes_several_images_no_image_and_a_history_file(tmp_path: Path, capsys) -> None:
    """`ask IMAGE [IMAGE ...] QUESTION`: the last positional is the question; `--no-image QUESTION`; `--history`."""
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(encode(Image.new("RGB", (40, 40), "red"), "PNG"))
    second.write_bytes(encode(Image.new("RGB", (30, 50), "blue"), "PNG"))
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps([["What is red?", "The square."], ["图中有什么？", "一个方块。"]], ensure_ascii=False),
                     encoding="utf-8")
    records = {}
    for name, args in {"one": [str(first), "Why?"], "two": [str(first), str(second), "Why?"],
                       "none": ["--no-image", "Why?"], "turns": [str(first), "Why?", "--history", str(turns)]}.items():
        assert core.__main__.main(["ask", *args, "--max-new-tokens", "4", "--json"]) == 0  # in-process: faster
        records[name] = json.loads(capsys.readouterr().out)
    one = records["one"]["input_tokens"]
    # The demo model's template writes "<image>\n" per image: its 16 image tokens and a newline.
    assert records["two"]["input_tokens"] == one + 17
    assert records["none"]["input_tokens"] == one - 17 and records["none"]["image_notes"] == []
    assert records["turns"]["input_tokens"] > one  # the earlier turns are in the prompt
    assert all(r["output_tokens"] == 4 for r in records.values())


@pytest.mark.parametrize(("args", "phrase"), [
    (["only a question"], "give at least one image and the question, or --no-image and the question"),
    (["--no-image", "x.png", "Why?"], "--no-image takes the question alone"),
    (["--history", "missing.json", "--no-image", "Why?"], "No history file at missing.json"),
])
def test_ask_argument_refusals_are_one_line(args: list[str], phrase: str, capsys) -> None:
    assert core.__main__.main(["ask", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and phrase in err[0], err


def test_ask_refuses_a_malformed_history_file_before_loading_a_model(tmp_path: Path, capsys) -> None:
    turns = tmp_path / "turns.json"
    turns.write_text('[["q", "a"], "not a pair"]', encoding="utf-8")
    assert core.__main__.main(["ask", "--no-image", "Why?", "--history", str(turns)]) == 2
    err = capsys.readouterr().err
    assert err == "error: The history file turns.json: turn 2 is not a [question, answer] pair of two strings.\n"


def test_ask_with_a_video_on_a_model_without_video_exits_2_in_one_line(tmp_path: Path, capsys) -> None:
    from tests.test_video import clip

    path = tmp_path / "clip.mp4"
    path.write_bytes(clip(seconds=2))
    assert core.__main__.main(["ask", str(path), "What happens?"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: The transformers backend's model cannot take a video"), err
