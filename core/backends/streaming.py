"""Run generation in a thread and hand its text to the caller piece by piece.

The thread's target is wrapped so that an exception inside generate() reaches the reader as a
GenerationError and the streamer's end marker is always pushed: the reader can never hang on it.
The reader also gives up after `timeout_s` without a new piece, and cancels the thread then.

This module imports neither torch nor transformers, so a remote-only Loupe never loads them: the token
streamer of a local model (a transformers TextIteratorStreamer) is in core/backends/token_streaming.py, and a
remote model's decoded text goes through TextQueue here.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from core.errors import GenerationError, LoupeError, OutOfMemoryError
from core.messages import MessageText
from core.records import Answer

_FEWER = "Try a smaller image, a shorter question or fewer new tokens; the model is still loaded."
GPU_OUT_OF_MEMORY = MessageText("generation.gpu_out_of_memory", "The GPU ran out of memory while answering. " + _FEWER)
HOST_OUT_OF_MEMORY = MessageText("generation.host_out_of_memory",
                                 "The machine ran out of memory while answering. " + _FEWER)
FAILED = MessageText("generation.failed", "Generation failed ({kind}: {reason}). The model is still loaded; try again.")
STALLED = MessageText("generation.stalled", "The model produced nothing for {seconds:.0f} s and the question was "
                                            "stopped. The model is still loaded; try again or lower max new tokens.")


class PieceQueue(Protocol):
    """What the reader drains: text pieces until the end marker; iteration raises queue.Empty after `timeout`
    seconds without a piece. A transformers TimedStreamer is one; TextQueue is the torch-free one."""

    timeout: float | None
    ended: bool

    def end(self) -> None: ...

    def __iter__(self) -> Iterator[str]: ...


class TextQueue:
    """A PieceQueue for text that arrives already decoded (a remote server's stream)."""

    _END = object()

    def __init__(self, timeout_s: float) -> None:
        self.timeout: float | None = timeout_s
        self.ended = False
        self._pieces: queue.Queue[object] = queue.Queue()

    def put(self, piece: str) -> None:
        self._pieces.put(piece)

    def end(self) -> None:
        self.ended = True
        self._pieces.put(self._END)

    def __iter__(self) -> Iterator[str]:
        while (piece := self._pieces.get(timeout=self.timeout)) is not self._END:
            yield str(piece)


class GenerationThread:
    """Runs `target` in a daemon thread; keeps its result or exception; always ends the streamer."""

    def __init__(self, target: Callable[[], Any], streamer: PieceQueue) -> None:
        self._target = target
        self.streamer = streamer
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="loupe-generate", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self._target()
        except BaseException as exc:  # noqa: BLE001 - anything must reach the reader, not die here
            self.error = exc
        finally:
            self.finished_at = time.perf_counter()
            if not self.streamer.ended:
                self.streamer.end()

    def start(self) -> GenerationThread:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def describe_failure(error: BaseException) -> LoupeError:
    """Turn whatever generate() raised into the typed error the analyst sees."""
    if isinstance(error, LoupeError):
        return error
    name = type(error).__name__
    if "OutOfMemory" in name or "out of memory" in str(error).lower():
        return OutOfMemoryError(GPU_OUT_OF_MEMORY())
    if isinstance(error, MemoryError) or "can't allocate memory" in str(error):  # host RAM (torch's CPU allocator)
        return OutOfMemoryError(HOST_OUT_OF_MEMORY())
    return GenerationError(FAILED(kind=name, reason=str(error)))


class Drainable:
    """`text()` and `collect()` for anything that yields text pieces and then holds `.answer`."""

    if TYPE_CHECKING:  # a read-only view for the type checker: AnswerStream keeps an attribute, Ticket a property
        @property
        def answer(self) -> Answer | None: ...

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError

    def text(self) -> str:
        """Drain the stream and return the final (possibly trimmed) answer text."""
        for _ in self:
            pass
        assert self.answer is not None
        return self.answer.text

    def collect(self) -> Answer:
        self.text()
        assert self.answer is not None
        return self.answer


class AnswerStream(Drainable):
    """Iterate it for text pieces as they come; once iteration ends, `.answer` holds the Answer.

    `finish` turns the finished generation thread into the Answer (it runs once, on the reader's side; every
    backend's `finish` ends in core/backends/answer_builder.py).
    """

    def __init__(
        self,
        thread: GenerationThread,
        cancel_event: threading.Event,
        finish: Callable[[GenerationThread], Answer],
    ) -> None:
        self._thread = thread
        self._cancel = cancel_event
        self._finish = finish
        self.answer: Answer | None = None  # the base declares a read-only view; written here

    def cancel(self) -> None:
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        try:
            for piece in self._thread.streamer:
                if piece:
                    yield piece
        except queue.Empty:
            self._cancel.set()
            timeout = self._thread.streamer.timeout
            raise GenerationError(STALLED(seconds=timeout or 0.0)) from None
        finally:
            # Reached on normal end, error, and when the reader abandons the generator early.
            if self.answer is None and self._thread.error is None and self._thread.finished_at is None:
                self._cancel.set()
        self._thread.join()
        if self._thread.error is not None:
            raise describe_failure(self._thread.error)
        self.answer = self._finish(self._thread)
