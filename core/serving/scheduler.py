"""One worker per loaded model: every question (any browser session, the batch runner, the API) waits in
its queue, and the worker, which alone touches the model, answers them one at a time.

Decisions:
- Fairness: each session has its own FIFO and the worker serves sessions round-robin, so one session's batch
  of 50 cannot starve another analyst's single question (that one waits for at most one request per
  session ahead of it). Positions ("2 requests ahead") follow that order and count the running request.
  An API request names its `client` (its token, or address), which is its lane instead of its session: a
  client rotating the `user` field it picks stays one lane, and may hold at most a quarter of `max_waiting`
  (so one client cannot fill the shared queue).
- One request at a time, no batching of compatible requests: the transformers backend streams one
  sequence, and a batch would make every member wait for the longest answer.
- Admission: before running, the worker estimates the question's memory (core/serving/admission.py) against what
  is free now and refuses it with a message that says what to reduce; submit() refuses at once a question
  that would not fit even in the memory free when the worker was last idle.
- Memory after every request: the worker drops the request's stream (inputs, output ids, cache), runs the
  garbage collector (a full pass after a failure, whose traceback holds tensors in cycles) and empties the
  CUDA cache, before it reports the request finished. Out-of-memory errors (CUDA or host) become a
  GenerationError for that user alone; the model stays loaded and the next request runs.
- A caller that goes away cancels its work: a Ticket that is garbage-collected, closed (`with`), or whose
  iteration is abandoned cancels its request; `abandon_session()` cancels everything of one session.
- Listeners (`add_listener`) get a FinishedRequest for every request, whatever its end (history hook).
"""
from __future__ import annotations

import gc
import itertools
import logging
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from core.backends.streaming import AnswerStream, describe_failure
from core.errors import AdmissionError, LoupeError, ModelUnloadingError, QueueFullError
from core.records import FinishedRequest, Query, QueueSnapshot
from core.serving import admission as admission_module
from core.serving.queue_messages import CLIENT_QUEUE_FULL, QUEUE_FULL, UNLOADED_BEFORE_START, UNLOADING
from core.serving.ticket import END, QueuedRequest, Ticket, describe_position, notify
from core.statuses import RequestStatus

if TYPE_CHECKING:
    from core.backends.base import Backend
    from core.serving.engine import Engine

__all__ = ["DEFAULT_SESSION", "QueueFullError", "Scheduler", "Ticket", "close_scheduler_for", "describe_position",
           "scheduler_for"]
log = logging.getLogger(__name__)
DEFAULT_SESSION = "default"


Listener = Callable[[FinishedRequest], None]


class Scheduler:
    """The queue in front of one loaded model; `submit()` from any thread; worker threads answer, as many as the
    backend's `max_in_flight` (1 for a local model, whose admission counts one request's memory; several for a
    remote engine, which batches them, so one hung request holds no one else's question). Workers take
    requests in the same round-robin order, so fairness across sessions is kept."""

    def __init__(self, backend: Backend, *, max_memory_gb: str = "", admission: bool = True,
                 max_waiting: int = 256) -> None:
        self.backend = backend
        self.max_waiting = max_waiting
        self.per_client = max(1, max_waiting // 4)
        self._admission = admission_module.for_backend(backend, max_memory_gb) if admission else None
        self._idle_free = self._admission.free() if self._admission else {}
        self._queues: dict[str, deque[QueuedRequest]] = {}  # insertion order is the round-robin order
        self._running: list[QueuedRequest] = []
        self._in_flight = max(1, int(getattr(backend, "max_in_flight", 1)))
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._closed = False
        self._listeners: list[Listener] = []
        self._workers: list[threading.Thread] = []

    # -- callers ---------------------------------------------------------------------------------
    def submit(self, query: Query, session: str = DEFAULT_SESSION, *, client: str | None = None) -> Ticket:
        """Queue `query` for `session` (in `client`'s lane when given, capped at `per_client`); raises
        AdmissionError or QueueFullError at once when it cannot run.

        The backend encodes the query here, once: admission counts that encoding, now and again when the
        worker takes it (against the memory free then), and generation runs on it."""
        with self._cond:
            if self._closed:  # before encoding: an unloaded backend cannot encode, and the analyst should hear why
                raise ModelUnloadingError(UNLOADING())
        encoded = self.backend.encode(query)
        if self._admission is not None:
            self._admission.check(encoded, self._idle_free)
        with self._cond:
            if self._closed:
                raise ModelUnloadingError(UNLOADING())
            if self._waiting() >= self.max_waiting:
                raise QueueFullError(QUEUE_FULL(waiting=self.max_waiting))
            if client is not None and len(self._queues.get(client, ())) >= self.per_client:
                raise QueueFullError(CLIENT_QUEUE_FULL(waiting=self.per_client))
            request = QueuedRequest(next(self._ids), session or DEFAULT_SESSION, encoded, lane=client)
            self._queues.setdefault(request.lane, deque()).append(request)
            self._ensure_worker()
            self._cond.notify_all()
        return Ticket(request, self)

    def ahead(self, request: QueuedRequest) -> int | None:
        with self._cond:
            if request.status != RequestStatus.QUEUED:
                return None
            order = self._service_order()
            return order.index(request) + len(self._running)

    def cancel(self, request: QueuedRequest) -> None:
        """Queued: removed at once. Running: its generation stops at the next token (answer marked truncated)."""
        with self._cond:
            request.cancel_requested.set()
            if request.status == RequestStatus.RUNNING:
                if request.stream is not None:
                    request.stream.cancel()
                return
            lane = self._queues.get(request.lane)
            if request.status != RequestStatus.QUEUED or lane is None or request not in lane:
                return  # already ended, or being taken this instant (a __del__ from the garbage collector)
            lane.remove(request)
            if not lane:
                del self._queues[request.lane]
            request.status, request.encoded = RequestStatus.CANCELLED, None
        self._finish(request)

    def abandon_session(self, session: str) -> int:
        """Cancel everything `session` has queued or running (its browser went away); returns how many."""
        with self._cond:
            mine = [r for lane in self._queues.values() for r in lane if r.session == session]
            mine += [r for r in self._running if r.session == session]
        for request in mine:
            self.cancel(request)
        return len(mine)

    def snapshot(self) -> QueueSnapshot:
        with self._cond:
            return QueueSnapshot(waiting=self._waiting(), running=bool(self._running), sessions=len(self._queues),
                                 in_flight=len(self._running))

    def add_listener(self, listener: Listener) -> None:
        """`listener(FinishedRequest)` is called after every request, before its caller sees the end (on the
        worker thread, or the cancelling caller's for a request cancelled in the queue); it must be quick."""
        self._listeners.append(listener)

    def close(self, timeout: float | None = 30.0) -> None:
        """Cancel everything queued and running, and stop the worker (before unloading the model)."""
        with self._cond:
            self._closed = True
            queued = [r for q in self._queues.values() for r in q]
            for request in queued:  # typed, so a batch item waiting now is paused, not failed
                request.error = ModelUnloadingError(UNLOADED_BEFORE_START())
            running = list(self._running)
            self._cond.notify_all()
        for request in queued + running:
            self.cancel(request)
        for worker in list(self._workers):
            worker.join(timeout)

    # -- worker ----------------------------------------------------------------------------------
    def _waiting(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def _service_order(self) -> list[QueuedRequest]:
        """Round-robin: the head of each session in rotation order, then each session's second, ..."""
        lanes = [list(q) for q in self._queues.values()]
        return [lane[depth] for depth in range(max(map(len, lanes), default=0)) for lane in lanes if depth < len(lane)]

    def _ensure_worker(self) -> None:
        """Enough live workers for the queued work, up to `max_in_flight` (called with the lock held)."""
        self._workers = [w for w in self._workers if w.is_alive()]
        while len(self._workers) < min(self._in_flight, len(self._running) + self._waiting()):
            worker = threading.Thread(target=self._work, name=f"loupe-scheduler-{len(self._workers)}", daemon=True)
            self._workers.append(worker)
            worker.start()

    def _take(self) -> QueuedRequest | None:
        with self._cond:
            while not self._queues and not self._closed:
                self._cond.wait()
            if self._closed and not self._queues:
                return None
            session = next(iter(self._queues))
            lane = self._queues.pop(session)
            request = lane.popleft()
            if lane:
                self._queues[session] = lane  # back of the rotation
            request.status = RequestStatus.RUNNING
            request.started = time.perf_counter()
            request.started_or_done.set()
            self._running.append(request)
            return request

    def _work(self) -> None:
        while (request := self._take()) is not None:
            failed = self._serve(request)
            self._release_memory(full=failed)
            with self._cond:
                self._running.remove(request)
            self._finish(request)

    def _serve(self, request: QueuedRequest) -> bool:
        """Run one request to its end; True when it failed (its exception may hold tensors in cycles)."""
        stream: AnswerStream | None = None
        try:
            assert request.encoded is not None
            if self._admission is not None:
                self._admission.check(request.encoded)
            served = time.perf_counter()  # the backend's own clock opens now: what came before is the queue's
            stream = self.backend.stream(request.encoded)
            with self._cond:
                request.stream = stream
            if request.cancel_requested.is_set():
                stream.cancel()
            for piece in stream:
                request.pieces.put(piece)
                notify(request)
            request.answer = request.with_queue_time(stream.answer, served)
            request.status = RequestStatus.DONE
            return False
        except AdmissionError as exc:
            request.error, request.status = _detached(exc), RequestStatus.REFUSED
        except Exception as exc:  # noqa: BLE001 - OOM (CUDA or host) and anything else: this user's error only
            request.error, request.status = _detached(describe_failure(exc)), RequestStatus.FAILED
        finally:
            with self._cond:
                request.stream = request.encoded = None
            stream = None  # noqa: F841 - drop the generation thread, its inputs and output ids now
        return True

    def _release_memory(self, full: bool) -> None:
        gc.collect() if full else gc.collect(1)
        torch = sys.modules.get("torch")  # never imported (a remote-only Loupe): there is no CUDA cache to empty
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        if self._admission is not None:
            self._idle_free = self._admission.free()

    def _finish(self, request: QueuedRequest) -> None:
        """Tell the listeners first (history is written before the caller sees the end), then the caller."""
        request.finished = time.perf_counter()
        started = request.started or request.finished
        record = FinishedRequest(
            request_id=request.id, session=request.session, query=request.query, status=request.status,
            answer=request.answer, error=str(request.error) if request.error else "",
            error_type=type(request.error).__name__ if request.error else "",
            submitted_at=request.submitted_at, waited_s=started - request.submitted,
            run_s=request.finished - started,
        )
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:  # noqa: BLE001 - a broken hook must not stop the queue
                log.exception("scheduler listener failed")
        request.pieces.put(END)
        request.done.set()
        request.started_or_done.set()
        notify(request)


def _detached(error: LoupeError) -> LoupeError:
    """The same error without its traceback, whose frames would keep the failed request's tensors alive."""
    error.__traceback__ = None
    error.__context__ = error.__cause__ = None
    return error


_schedulers: dict[int, tuple[weakref.ref[Engine], Scheduler]] = {}
_schedulers_lock = threading.Lock()
_on_new: list[Callable[[Scheduler], None]] = []  # told of every scheduler scheduler_for makes (metrics' counters)


def live_schedulers(on_new: Callable[[Scheduler], None] | None = None) -> list[Scheduler]:
    """The schedulers of this process's loaded engines; `on_new` is also told of every one made later."""
    with _schedulers_lock:
        if on_new is not None and on_new not in _on_new:
            _on_new.append(on_new)
        return [found for _ref, found in _schedulers.values()]


def scheduler_for(engine: Engine) -> Scheduler:
    """The one scheduler of a loaded engine, shared by the dashboard, the batch runner and the API.

    It lives as long as the engine: when the engine is dropped (model switch) its scheduler is closed.
    Close it yourself (`scheduler_for(engine).close()`) before calling `backend.unload()`.
    """
    with _schedulers_lock:
        ref, found = _schedulers.get(id(engine), (None, None))
        if found is None or ref is None or ref() is not engine:
            found = Scheduler(engine.backend, max_memory_gb=engine.settings.max_memory_gb)
            _schedulers[id(engine)] = (weakref.ref(engine), found)
            weakref.finalize(engine, _forget, id(engine), found)
            for hook in _on_new:
                hook(found)
        return found


def close_scheduler_for(engine: Engine, timeout: float | None = 30.0) -> None:
    """Cancel everything queued for `engine`, stop its worker; call it before `engine.backend.unload()`."""
    with _schedulers_lock:
        _ref, found = _schedulers.pop(id(engine), (None, None))
    if found is not None:
        found.close(timeout)


def _forget(key: int, scheduler: Scheduler) -> None:
    with _schedulers_lock:
        if _schedulers.get(key, (None, None))[1] is scheduler:
            del _schedulers[key]
    scheduler.close(timeout=0)
