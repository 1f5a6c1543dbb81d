"""What core says to an analyst, as a stable id and its parameters as well as its English sentence.

Design (issue #17, "Two languages"): core stays language-free. Its English sentences are exactly what they
were (the command line, the API and history keep them), and each sentence an analyst is shown also carries
a `message_id` and its `params`, so the dashboard can say it in the analyst's language:
- a module declares each sentence once, where it says it: `TOO_LONG = MessageText("question.too_long",
  "The question is {length} characters long; ...")`; calling it with the parameters gives a `Message`;
- a typed error takes a Message (core/errors.py: `QuestionError(TOO_LONG(length=240, limit=200))`) and
  keeps it as `error.message`, with `message_id` and `params`; its str() is the English sentence;
- a PreparedImage keeps its notes as English text (`notes`) and as Messages (`note_messages`); history
  keeps both (the error's and the notes' ids and parameters, core/history).
- dashboard/widgets/core_text.py is the one place that turns a Message into the analyst's language, from
  the `core.<message_id>` entries of assets/i18n/{en,zh}.toml; an id without an entry shows the English.
Parameters are values (numbers, Loupe's own words) or outside text (a file name, a server's reply): the
dashboard escapes str parameters where it draws them. A test collects every MessageText in core's source
and checks both tables have it (and that en.toml's sentence is this module's English, word for word).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ParamValue = str | int | float
CATALOGUE: dict[str, str] = {}  # message_id → English template, filled as modules declare their MessageTexts


@dataclass(frozen=True)
class Message:
    """One sentence core said: its stable id, the parameters that fill it, and its English text."""

    message_id: str
    text: str
    params: Mapping[str, ParamValue] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> dict[str, Any]:
        return {"id": self.message_id, "params": dict(self.params), "text": self.text}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        return cls(str(data["id"]), str(data["text"]), dict(data.get("params") or {}))


@dataclass(frozen=True)
class MessageText:
    """A sentence core may say: its id (stable, named in the i18n tables) and its English `{name}` template."""

    message_id: str
    english: str

    def __post_init__(self) -> None:
        known = CATALOGUE.setdefault(self.message_id, self.english)
        if known != self.english:
            raise ValueError(f"message id {self.message_id!r} is declared twice with different English")

    def __call__(self, **params: ParamValue) -> Message:
        return Message(self.message_id, self.english.format(**params), params)
