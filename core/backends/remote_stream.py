"""What one streamed remote answer has delivered so far, chunk by chunk, and how it is stopped (used by
core/backends/openai_remote.py; the decisions are in its docstring)."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.backends.remote_errors import error_in, plain
from core.errors import GenerationError


class Closable(Protocol):
    def close(self) -> None: ...


class Cancel(threading.Event):
    """The answer's cancel flag; setting it also closes the response being read, so a reader blocked on a
    server that sends nothing (or only keep-alive comments) is woken at once instead of at its timeout."""

    def __init__(self) -> None:
        super().__init__()
        self._response: Closable | None = None
        self._lock = threading.Lock()

    def closes(self, response: Closable) -> None:
        with self._lock:
            self._response = response
            already = self.is_set()
        if already:
            response.close()

    def set(self) -> None:
        super().set()
        with self._lock:
            response = self._response
        if response is not None:
            try:
                response.close()
            except Exception:  # noqa: BLE001 - closing races the reader's own close; either way it is closed
                pass


@dataclass
class StreamState:
    """What one streamed answer has delivered so far (mutable: filled chunk by chunk on the request's thread)."""

    base_url: str
    pieces: list[str] = field(default_factory=list)
    finish: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    sent: float | None = None  # perf_counter when the request was sent
    first: float | None = None  # perf_counter of the first piece of text
    last: float = field(default_factory=time.perf_counter)  # of the last piece (or the start): the stall clock

    @property
    def complete(self) -> bool:
        """The server said the answer ended (a finish_reason). Anything else is a cut stream."""
        return self.finish is not None

    def cut_error(self, why: str) -> GenerationError:
        arrived = sum(len(piece) for piece in self.pieces)
        return GenerationError(
            f"The stream from the remote server {self.base_url} ended before the answer was complete ({why}); "
            f"{arrived} characters had arrived and are kept with the failed question. Try again.")

    def not_json(self, data: str) -> GenerationError:
        return GenerationError(f"The remote server {self.base_url} sent an event that is not JSON: "
                               f"{plain(data)[:100]}")

    def take(self, chunk: dict[str, Any]) -> str | None:
        """Take one chunk (as JSON); return the text it adds, if any. An error object inside the stream
        (vLLM's {"object": "error", ...}) is raised as a GenerationError with the server's message."""
        message = error_in(chunk)
        if message is not None:
            raise GenerationError(f"The remote server failed while answering: {message}")
        self.usage = chunk.get("usage") or self.usage
        added = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                added.append(str(piece))
            self.finish = choice.get("finish_reason") or self.finish
        if not added:
            return None
        text = "".join(added)
        self.last = time.perf_counter()
        if self.first is None:
            self.first = self.last
        self.pieces.append(text)
        return text

