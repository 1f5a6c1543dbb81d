"""Reading what an OpenAI-compatible server sends back: its server-sent events, its error bodies, and when a
stream counts as complete (used by core/backends/openai_remote.py; the decisions are in its docstring).

Error text from a server is outside text: it is reduced to one plain line (an HTML page to its words, JSON to
its message) and bounded, so what the analyst sees is the server's message, never its markup or a dump.
"""
from __future__ import annotations

import html
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from core.errors import GenerationError, LoupeError, ModelError, QuestionError

MESSAGE_LIMIT = 300  # characters of a server's message shown; an error page can be megabytes


def _plain(text: str) -> str:
    """One bounded line of plain text from a body that may be an HTML page."""
    if "<" in text and ">" in text:
        text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def error_in(payload: object) -> str | None:
    """The message of an error in any shape servers use: OpenAI's {"error": {"message"}}, {"error": "..."},
    vLLM's {"object": "error", "message"}, FastAPI's {"detail"}; None when `payload` is not an error."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        return _plain(str(error.get("message") or json.dumps(error)))
    if error:
        return _plain(str(error))
    if payload.get("object") == "error":
        return _plain(str(payload.get("message") or "an error without a message"))
    if "detail" in payload:
        return _plain(str(payload["detail"]))
    return None


def body_message(text: str, reason: str = "") -> str:
    """What an error body says, as one plain line: its JSON error's message, else its text, else the reason."""
    try:
        found = error_in(json.loads(text))
    except ValueError:
        found = None
    return found or _plain(text) or reason or "no message"


def refusal(status: int, text: str, reason: str, base_url: str) -> LoupeError:
    """A non-200 answer as the typed error the analyst sees."""
    message = body_message(text, reason)
    if status in (401, 403):
        return ModelError(f"The remote server {base_url} refused the API key ({message}). Check openai_api_key.")
    if status in (400, 413, 422):
        return QuestionError(f"The remote server refused the question: {message}")
    if status == 404:
        return ModelError(f"The remote server {base_url} has no such model or route ({message}).")
    if status == 429:
        return GenerationError(f"The remote server is busy ({message}); try again in a while.")
    return GenerationError(f"The remote server failed to answer (HTTP {status}: {message}).")


@dataclass
class StreamState:
    """What one streamed answer has delivered so far (mutable: filled line by line on the request's thread)."""

    base_url: str
    pieces: list[str] = field(default_factory=list)
    finish: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    done: bool = False  # "[DONE]" arrived
    first: float | None = None  # perf_counter of the first piece of text
    last: float = field(default_factory=time.perf_counter)  # of the last piece (or the start): the stall clock

    @property
    def complete(self) -> bool:
        """The server said the answer ended: a finish_reason or [DONE]. Anything else is a cut stream."""
        return self.done or self.finish is not None

    def cut_error(self, why: str) -> GenerationError:
        arrived = sum(len(piece) for piece in self.pieces)
        return GenerationError(
            f"The stream from the remote server {self.base_url} ended before the answer was complete ({why}); "
            f"{arrived} characters had arrived and are kept with the failed question. Try again.")

    def read_line(self, line: str) -> str | None:
        """Take one SSE line; return the text it adds, if any. Raises the server's error as a GenerationError."""
        if not line.startswith("data:"):
            return None  # blank separators, "event:" and ": comments" (keep-alives)
        data = line[5:].strip()
        if data == "[DONE]":
            self.done = True
            return None
        try:
            event = json.loads(data)
        except ValueError:
            raise GenerationError(
                f"The remote server {self.base_url} sent an event that is not JSON: {_plain(data)[:100]}") from None
        message = error_in(event)
        if message is not None:
            raise GenerationError(f"The remote server failed while answering: {message}")
        if not isinstance(event, dict):
            raise GenerationError(f"The remote server {self.base_url} sent an event that is not an object: "
                                  f"{_plain(data)[:100]}")
        self.usage = event.get("usage") or self.usage
        added = []
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
            if piece:
                added.append(str(piece))
            if isinstance(choice, dict):
                self.finish = choice.get("finish_reason") or self.finish
        if not added:
            return None
        text = "".join(added)
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
        self.pieces.append(text)
        return text
