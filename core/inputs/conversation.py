"""Earlier turns of a conversation, read from a JSON file: a list of [question, answer] pairs, oldest first.

This is the model's own chat() `history` shape (InternLM-XComposer2.5 takes `[(question, answer), ...]`),
so a transcript can be written by hand or saved from another tool. Every fault is refused in one line that
names the file and the turn.
"""
from __future__ import annotations

import json
from pathlib import Path

from core.errors import QuestionError
from core.records import Turn


def read_history_file(path: Path | str) -> tuple[Turn, ...]:
    file = Path(path)
    if not file.is_file():
        raise QuestionError(f"No history file at {path}.")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise QuestionError(f"The history file {file.name} is not UTF-8 text.") from None
    return read_history_file_text(text, file.name)


def read_history_file_text(text: str, name: str) -> tuple[Turn, ...]:
    """The turns in `text` (a history file's content); `name` is the file's name for the messages."""
    try:
        pairs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QuestionError(f"The history file {name} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    if not isinstance(pairs, list):
        raise QuestionError(f"The history file {name} must be a JSON list of [question, answer] pairs, "
                            f'e.g. [["What is this?", "A cat."]].')
    turns = []
    for number, pair in enumerate(pairs, start=1):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise QuestionError(f"The history file {name}: turn {number} is not a [question, answer] pair of "
                                "two strings.")
        if not pair[0].strip():
            raise QuestionError(f"The history file {name}: turn {number} has an empty question.")
        turns.append(Turn(question=pair[0].strip(), answer=pair[1].strip()))
    return tuple(turns)
