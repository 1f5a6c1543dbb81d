"""Continuous batching on the fast path: answers that arrive while others decode join the running rows at the
next step and leave when they end.

Why: a decode step is bound by reading the weights, so one step for every row costs about what one row
costs. With one answer at a time, ten analysts share one stream; with rows, up to `fast.rows` answers
progress together and each keeps most of its speed alone.
How: one loop on the decoder's own thread (where its CUDA graphs live) owns the rows. Callers hand in a
request and wait for it; between two steps the loop prefills whatever has arrived into free rows, all of it
in one pass (packed_prefill.py; the other rows wait for that pass: there is no chunked prefill), then
advances every row by one token with the step compiled for all rows at load time (rows not in use are
carried along, their tokens ignored). A row leaves at its end-of-sequence token, its token budget or its
cancel, and its row is free at the next step.
Each row has its own position and repetition-penalty history, so an answer is token for token the answer
it gets alone (tested on the demo model). Order: requests are admitted first come, first served; the
scheduler in front (core/serving/scheduler.py) keeps its round-robin fairness across sessions.
A failure in a prefill fails that request only (a pass that fails is retried one prompt at a time); a
failure in a step (out of memory) fails every request in the rows, as it would have failed the one request
decoding alone, and the loop carries on empty.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from core.models.fast_decode import FastDecoder
from core.models.packed_prefill import prefill_prompts
from core.models.token_readback import TokenReadback

if TYPE_CHECKING:
    from transformers.generation.streamers import BaseStreamer


@dataclass(eq=False)
class _Request:
    inputs: dict[str, Any]
    max_new_tokens: int
    penalty: float
    eos_ids: set[int]
    streamer: BaseStreamer | None
    should_stop: Callable[[], bool] | None
    produced: list[int] = field(default_factory=list)
    length: int = 0
    budget: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass
class LoopClock:
    """Where the loop's wall time went, summed over its runs (for benchmarks: a host-bound loop shows little
    waiting). `waiting_s`: blocked on a step's tokens (the GPU's share); `admitting_s`: prefilling arrivals."""

    running_s: float = 0.0
    admitting_s: float = 0.0
    waiting_s: float = 0.0
    steps: Counter[int] = field(default_factory=Counter)  # steps launched, by width (rows in the step)


class _Positions:
    """Each row's next position, kept on the device: copying a host list into the step's input would make the
    host wait for the GPU at every step (a blocking host-to-device copy), undoing the launch ahead. Rows that
    hold no request advance too (clamped to the cache's end); their tokens are ignored and an admission resets
    the row."""

    def __init__(self, fast: FastDecoder) -> None:
        self.start = torch.zeros(fast.rows, dtype=torch.long, device=fast.device)  # each row's prompt length
        self.count = torch.zeros(fast.rows, dtype=torch.long, device=fast.device)  # steps launched for the row
        self.last = fast.max_len - 1

    def admit(self, row: int, length: int) -> None:
        self.start[row] = length
        self.count[row] = 0

    def write_into(self, pos: torch.Tensor) -> None:
        torch.clamp(self.start + self.count, max=self.last, out=pos)

    def advance(self) -> None:
        self.count += 1


class ContinuousBatcher:
    """Runs `generate()` calls from many threads together on `fast`'s rows (see the module docstring)."""

    def __init__(self, fast: FastDecoder) -> None:
        self.fast = fast
        self.prefilling: object | None = None  # the inputs whose prefill runs now (the stage clocks' vision gate)
        self.most_rows_at_once = 0  # the largest number of rows one step advanced (for tests and benchmarks)
        self.joined_running = 0  # requests admitted while others were decoding
        self.prefixes_shared = 0  # requests prefilled from a running row's cached prefix (shared_prefix.py)
        self.clock = LoopClock()
        self._lock = threading.Lock()
        self._pending: deque[_Request] = deque()
        self._running = False

    def generate(self, inputs: dict[str, Any], max_new_tokens: int, repetition_penalty: float, eos_ids: set[int],
                 streamer: BaseStreamer | None = None, should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
        """As FastDecoder.generate (prompt + new ids; streamed; greedy), sharing the rows with other callers."""
        return self.wait(self.submit(inputs, max_new_tokens, repetition_penalty, eos_ids, streamer, should_stop))

    def submit(self, inputs: dict[str, Any], max_new_tokens: int, repetition_penalty: float, eos_ids: set[int],
               streamer: BaseStreamer | None = None, should_stop: Callable[[], bool] | None = None) -> _Request:
        """Hand a request to the loop (started if idle) without waiting; `wait` gives its ids."""
        request = _Request(inputs, max_new_tokens, repetition_penalty, eos_ids, streamer, should_stop)
        with self._lock:
            self._pending.append(request)
            if not self._running:
                self._running = True
                self.fast.submit_to_own_thread(self._loop)
        return request

    @property
    def idle(self) -> bool:
        """No loop running (its clock is complete)."""
        with self._lock:
            return not self._running

    @staticmethod
    def wait(request: _Request) -> torch.Tensor:
        request.done.wait()
        if request.error is not None:
            raise request.error
        input_ids = request.inputs["input_ids"]
        new = torch.tensor([request.produced], dtype=input_ids.dtype, device=input_ids.device)
        return torch.cat([input_ids, new], dim=1)

    # -- the loop, on the decoder's thread ---------------------------------------------------------
    @torch.no_grad()
    def _loop(self) -> None:
        began = time.perf_counter()
        fast = self.fast
        rows: list[_Request | None] = [None] * fast.rows
        tokens = torch.zeros(fast.rows, dtype=torch.long, device=fast.device)
        penalty = torch.ones(fast.rows, 1, device=fast.device)
        pos = torch.zeros(fast.rows, dtype=torch.long, device=fast.device)
        launched: list[int] = [0] * fast.rows  # steps launched for each row's request (the host's count)
        places = _Positions(fast)
        readback = TokenReadback(fast.device, fast.rows, fast.read_ahead)
        in_flight: tuple[object, list[_Request | None]] | None = None  # a launched step, not yet read
        while True:
            with self._lock:
                free = [row for row, held in enumerate(rows) if held is None]
                arrived = [self._pending.popleft() for _ in range(min(len(free), len(self._pending)))]
                if not arrived and in_flight is None and all(held is None for held in rows):
                    self._running = False
                    self.clock.running_s += time.perf_counter() - began  # under the lock: read once idle
                    return
            if arrived:
                self.joined_running += len(arrived) * any(held is not None for held in rows)
                admitting = time.perf_counter()
                admitted = self._admit(list(zip(free, arrived)), penalty, rows, tokens)
                self.clock.admitting_s += time.perf_counter() - admitting
                for row, request in admitted:
                    rows[row], launched[row] = request, 0
                    places.admit(row, request.length)
                values = tokens[[row for row, _ in admitted]].tolist() if admitted else []  # one wait for all
                for (row, _), value in zip(admitted, values):
                    self._deliver(rows, row, value)
            # One step ahead (token_readback.py): launch the next step, then read the one before it.
            launch = self._launch(rows, tokens, pos, penalty, launched, readback, places)
            if launch is not None:
                tokens = launch[0]
            if in_flight is not None:
                self._read(rows, *in_flight)
                in_flight = None
            if launch is not None:
                in_flight = launch[1:]
                if not readback.ahead:
                    self._read(rows, *in_flight)
                    in_flight = None

    def _launch(self, rows: list[_Request | None], tokens: torch.Tensor, pos: torch.Tensor, penalty: torch.Tensor,
                launched: list[int], readback: TokenReadback, places: _Positions
                ) -> tuple[torch.Tensor, object, list[_Request | None]] | None:
        """Queue one step for every running row: the new tokens (on the device), their read handle and which
        request each row held at launch; None when no row runs or the step failed (its requests then ended)."""
        fast = self.fast
        active = [row for row, held in enumerate(rows) if held is not None]
        if not active:
            return None
        self.most_rows_at_once = max(self.most_rows_at_once, len(active))
        furthest = max(min(held.length + launched[row], fast.max_len - 1) for row, held in enumerate(rows)
                       if held is not None)
        places.write_into(pos)
        # A lone answer (always in row 0: rows are filled from the first) takes the one-row step, also
        # compiled at load time, so one analyst alone pays nothing for the rows.
        width = 1 if active == [0] else fast.rows
        try:
            stepped = fast.replay_step(tokens[:width], pos[:width], penalty[:width], furthest)
        except Exception as exc:  # noqa: BLE001 - every request in the rows fails with it; the loop goes on
            for row in active:
                self._end(rows, row, exc)
            return None
        for row in active:
            launched[row] += 1
        self.clock.steps[width] += 1
        places.advance()
        new_tokens = stepped if width == fast.rows else torch.cat([stepped, tokens[width:]])
        return new_tokens, readback.start(stepped), list(rows)

    def _read(self, rows: list[_Request | None], handle: object, held_at_launch: list[_Request | None]) -> None:
        """Deliver a launched step's tokens to the requests that still hold their rows (a row that ended or
        changed hands since the launch ignores its token)."""
        waiting = time.perf_counter()
        values = TokenReadback.read(handle)  # the one wait per step, for that step only
        self.clock.waiting_s += time.perf_counter() - waiting
        for row, value in enumerate(values):
            if rows[row] is not None and rows[row] is held_at_launch[row]:
                self._deliver(rows, row, value)

    def _admit(self, arrivals: list[tuple[int, _Request]], penalty: torch.Tensor, rows: list[_Request | None],
               tokens: torch.Tensor) -> list[tuple[int, _Request]]:
        """Prefill `arrivals` (row, request) in one pass, copying prefixes from running rows where prompts begin
        alike (shared_prefix.py); their first tokens go into `tokens`. Returns those admitted. When the pass
        fails, each is tried alone, so a request fails (and ends) for its own prompt or memory only."""
        fast = self.fast
        for row, request in arrivals:
            penalty[row] = request.penalty
        holders = [(held_row, held.inputs) for held_row, held in enumerate(rows) if held is not None]
        try:
            prefilled = prefill_prompts(fast, [(row, request.inputs) for row, request in arrivals], holders, penalty,
                                        on_forward=self._set_prefilling)
        except Exception as exc:  # noqa: BLE001 - this pass's failure: a prompt's own, or its memory
            if len(arrivals) > 1:
                return [admitted for one in arrivals for admitted in self._admit([one], penalty, rows, tokens)]
            request = arrivals[0][1]
            request.error = exc
            self._finish(request)
            return []
        for (_row, request), length, shared in zip(arrivals, prefilled.lengths, prefilled.shared):
            request.length = length
            request.budget = min(request.max_new_tokens, fast.max_len - length)
            self.prefixes_shared += shared > 0
            if request.streamer is not None:
                request.streamer.put(request.inputs["input_ids"].cpu())
        tokens[[row for row, _ in arrivals]] = prefilled.firsts
        return arrivals

    def _set_prefilling(self, inputs: object) -> None:
        self.prefilling = inputs

    def _deliver(self, rows: list[_Request | None], row: int, value: int) -> None:
        """One new token for the request in `row`, in FastDecoder.generate's order: kept, streamed, then the end
        checks (its end-of-sequence token, its budget, then its own stop callback)."""
        request = rows[row]
        assert request is not None
        request.produced.append(value)
        if request.streamer is not None:
            request.streamer.put(torch.tensor([value]))
        if (value in request.eos_ids or len(request.produced) >= request.budget
                or (request.should_stop is not None and request.should_stop())):
            self._end(rows, row, None)

    def _end(self, rows: list[_Request | None], row: int, error: BaseException | None) -> None:
        request = rows[row]
        assert request is not None
        rows[row] = None
        request.error = error
        self._finish(request)

    @staticmethod
    def _finish(request: _Request) -> None:
        if request.streamer is not None and request.error is None:
            request.streamer.end()
        request.done.set()
