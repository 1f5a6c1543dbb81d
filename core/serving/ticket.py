"""A caller's handle on one queued question (Ticket) and the scheduler's record of it (QueuedRequest).

The Ticket reads like an AnswerStream (iterate for pieces, then `.answer`; `.cancel()`; `.collect()`), so a
caller can switch from `engine.ask()` to `engine.submit()` without other changes. It also answers "where
am I in the queue" (`ahead()`, `describe_position()`), and an async reader can `drain()` it instead of
blocking. The scheduler never holds a Ticket, only its QueuedRequest: so a Ticket nobody holds any more is
garbage-collected, and its `__del__` cancels the question (the caller went away).
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from core.backends.base import EncodedQuery
from core.backends.streaming import AnswerStream, Drainable
from core.errors import GenerationError, LoupeError
from core.records import Answer, Query
from core.serving.queue_messages import CANCELLED_BEFORE_START
from core.statuses import RequestStatus

if TYPE_CHECKING:
    from core.serving.scheduler import Scheduler

log = logging.getLogger(__name__)
END = object()  # pushed after the last piece


class QueuedRequest:
    """The scheduler's side of one question; callers only ever hold the Ticket that wraps it."""

    def __init__(self, request_id: int, session: str, encoded: EncodedQuery, lane: str | None = None) -> None:
        self.id = request_id
        self.session = session
        self.lane = lane or session  # the queue it waits in (the API's: one per client, whatever `user` says)
        self.query: Query = encoded.query
        self.encoded: EncodedQuery | None = encoded  # dropped once served: its tensors are no longer needed
        self.status = RequestStatus.QUEUED
        self.pieces: queue.Queue[Any] = queue.Queue()
        self.done = threading.Event()
        self.started_or_done = threading.Event()
        self.cancel_requested = threading.Event()
        self.stream: AnswerStream | None = None
        self.notify: Callable[[], None] | None = None  # called on the worker thread after each piece and at the end
        self.answer: Answer | None = None
        self.error: LoupeError | None = None
        self.submitted_at = time.time()
        self.submitted = time.perf_counter()  # entered the queue: the scheduler's clock starts here
        self.started: float | None = None  # a worker took it
        self.finished: float | None = None

    def with_queue_time(self, answer: Answer | None, served: float) -> Answer | None:
        """The backend's Answer with the scheduler's clock added: the time in the queue (entering it to a worker
        taking it) as `queue`, and `total` counted from entering the queue (`served`: when the backend started,
        after the worker's admission check), so it is the wall time the analyst waited for the last token."""
        if answer is None or self.started is None:
            return answer
        timings = answer.timings.after_queue(self.started - self.submitted, served - self.submitted)
        return dataclasses.replace(answer, timings=timings)


class Ticket(Drainable):
    """A caller's handle on one queued question. Iterate it for text pieces (it waits its turn first);
    afterwards `.answer` holds the Answer. Dropping the handle cancels the question.
    """

    def __init__(self, request: QueuedRequest, scheduler: Scheduler) -> None:
        self._request = request
        self._scheduler = scheduler

    @property
    def id(self) -> int:
        return self._request.id

    @property
    def session(self) -> str:
        return self._request.session

    @property
    def status(self) -> RequestStatus:
        return self._request.status

    @property
    def answer(self) -> Answer | None:
        return self._request.answer

    @property
    def error(self) -> LoupeError | None:
        return self._request.error

    @property
    def finished(self) -> bool:
        return self._request.done.is_set()

    def ahead(self) -> int | None:
        """Requests that will be served before this one (the running one included); None once it runs."""
        return self._scheduler.ahead(self._request)

    def cancel(self) -> None:
        self._scheduler.cancel(self._request)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the request is finished (answered, failed or cancelled); False on timeout."""
        return self._request.done.wait(timeout)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the worker has taken the request (or it ended); False on timeout. A page calls it in a
        loop, showing describe_position() in between, before it iterates for the answer."""
        return self._request.started_or_done.wait(timeout)

    def on_update(self, callback: Callable[[], None]) -> None:
        """Call `callback()` (on the worker thread: keep it tiny) whenever a piece arrives or the request ends,
        for async readers that use drain() instead of blocking iteration (the API)."""
        self._request.notify = callback
        if self.finished:
            callback()

    def drain(self) -> tuple[list[str], bool]:
        """The pieces that arrived since the last call, without waiting, and whether the request has ended.
        Once it has ended, `.answer` or `.error` says how; do not mix with iteration."""
        pieces: list[str] = []
        ended = False
        while True:
            try:
                piece = self._request.pieces.get_nowait()
            except queue.Empty:
                return pieces, ended
            if piece is END:
                ended = True
            else:
                pieces.append(piece)

    def __iter__(self) -> Iterator[str]:
        completed = False
        try:
            while (piece := self._request.pieces.get()) is not END:
                yield piece
            completed = True
        finally:
            if not completed:  # the reader stopped early (closed tab, abandoned generator): nobody wants the rest
                self.cancel()
        if self._request.error is not None:
            raise self._request.error
        if self._request.answer is None:
            raise GenerationError(CANCELLED_BEFORE_START())

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_: object) -> None:
        if not self.finished:
            self.cancel()

    def __del__(self) -> None:
        request = getattr(self, "_request", None)
        if request is not None and not request.done.is_set():
            self._scheduler.cancel(request)


def notify(request: QueuedRequest) -> None:
    if request.notify is not None:
        try:
            request.notify()
        except Exception:  # noqa: BLE001 - e.g. the reader's event loop already closed
            log.debug("notify callback failed", exc_info=True)


def describe_position(ticket: Ticket) -> str:
    """What the UI shows while a question waits: "2 requests ahead", "next", "answering", "done"."""
    ahead = ticket.ahead()
    if ahead is None:
        return "answering" if ticket.status == RequestStatus.RUNNING else ticket.status.value
    if ahead == 0:
        return "next"
    return f"{ahead} request{'s' if ahead != 1 else ''} ahead"
