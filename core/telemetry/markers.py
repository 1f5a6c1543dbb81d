"""Stage markers: when each query ran its stages, and the peak memory per device inside each stage.

A backend opens a `QueryClock` per query and calls it at each boundary; the clock publishes a
`QueryTrace` here, which the memory chart draws as shaded bands and the GPU page lists. The same clock
is the answer's stopwatch: `readings()` hands the backend the very boundary times and peaks the bands
show, from which core/backends/answer_builder.py computes the Answer's timings. So there is one hook on
the vision tower per query and one reset of the allocator's peak counters per stage boundary.

Stages, in order, never overlapping (wall-clock, the sampler's clock):
- preprocess: image preparation + processor + copying the inputs to the device. It runs outside the
  generation lock, beside another query's generation, so resetting the allocator's peak counters there
  would spoil that query's figures: its memory figure is what is allocated at its end, not a peak.
- vision: first to last forward of the vision tower (forward hooks, CUDA-synchronised so the GPU's work is
  inside them); the answer's `vision` seconds add up the forwards themselves.
- prefill: the end of vision to the first new token (its peak also covers the few milliseconds of
  generate() before the vision tower runs).
- decode: the first new token to the last.
The gap between preprocess and vision is time spent waiting for the model (another query was running).
Peaks come from torch's allocator ("cuda:N", reset at each boundary inside the generation lock); "cpu"
is the process RSS at the end of the stage. The answer's `peak_memory_gb` is the per-device maximum
over vision, prefill and decode, so it still covers the whole generation.
"""
from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

from core.records import Query
from core.statuses import TraceOutcome
from core.telemetry import gpu_reader

if TYPE_CHECKING:
    import torch
    from torch.utils.hooks import RemovableHandle
from core.telemetry.ring import Ring
from core.telemetry.snapshots import QueryTrace, StageMark

STAGES = ("preprocess", "vision", "prefill", "decode")
KEEP_TRACES = 500  # finished queries kept for the chart; 15 minutes of a busy server fits

_lock = threading.Lock()
_finished: Ring[QueryTrace] = Ring(KEEP_TRACES)
_running: dict[str, QueryClock] = {}
_by_query: weakref.WeakKeyDictionary[Query, str] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class StageReadings:
    """One query's clock readings (perf_counter seconds) and peaks, as the markers recorded them."""

    prepared_s: float  # image preparation + encoding, done before `started` (a duration, not a reading)
    started: float  # the clock opened: the backend took the encoded query
    preprocessed: float  # inputs on the device
    generation_started: float  # inside the generation lock
    vision_s: float  # the vision tower's forwards before the first token, added up
    first_token: float | None  # None: no token came (failed or cancelled before one)
    ended: float  # the last token (the end of generation)
    peaks: dict[str, float]  # per device, over vision, prefill and decode


def _in_use_gb() -> dict[str, float]:
    """What is allocated right now per CUDA device (no peak), plus the process RSS."""
    import torch

    in_use = {}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        in_use = {f"cuda:{i}": torch.cuda.memory_allocated(i) / 1e9 for i in range(torch.cuda.device_count())}
    return {**in_use, "cpu": psutil.Process().memory_info().rss / 1e9}


def _merge(into: dict[str, float], reading: dict[str, float]) -> dict[str, float]:
    """Per-device maximum of CUDA peaks; 'cpu' (RSS, not a peak) takes the newer reading."""
    merged = dict(into)
    for device, gb in reading.items():
        merged[device] = gb if device == "cpu" else max(gb, merged.get(device, 0.0))
    return merged


class QueryClock:
    """One query's stage boundaries, called by the backend as it reaches them; publishes a QueryTrace."""

    def __init__(self, model: str, query: Query, prepared_s: float = 0.0) -> None:
        """Opened when the backend takes the query; `prepared_s`: the seconds its preparation took before."""
        self.query_id = uuid.uuid4().hex[:12]
        self.model = model
        self.question = query.question
        self._opened = time.perf_counter()
        self._prepared_s = prepared_s
        self._start = self._opened - prepared_s  # preprocessing's band starts with the image's preparation
        # perf_counter readings become wall-clock time (the samples' clock) through one fixed offset, so
        # a boundary shared by two stages converts to the very same float for both.
        self._to_wall = time.time() - time.perf_counter()
        self._stages: list[StageMark] = []
        self._outcome = TraceOutcome.RUNNING
        self._end: float | None = None
        self._end_wall: float | None = None
        self._mark = self._start  # start of the stage now open
        self._preprocessed = self._generation_started = self._opened
        self._prefill_peaks: dict[str, float] = {}
        self._vision: tuple[float, float, dict[str, float]] | None = None  # first start, last end, peaks
        self._vision_open_at: float | None = None
        self._vision_s = 0.0
        self._first_token_at: float | None = None
        self._first_token_seen = False
        self._peaks: dict[str, float] = {}
        self._hooks: list[RemovableHandle] = []
        with _lock:
            _running[self.query_id] = self
            _by_query[query] = self.query_id

    # -- boundaries, in the order a generation reaches them ----------------------------------------
    def preprocess_done(self) -> None:
        self._preprocessed = time.perf_counter()
        self._add("preprocess", self._start, self._preprocessed, _in_use_gb())

    @contextmanager
    def generating(self, vision_module: torch.nn.Module | None, cancelled: Callable[[], bool],
                   vision_gate: Callable[[], bool] | None = None) -> Iterator[None]:
        """One generate call on the clock, for every backend: started with the vision tower watched; any exception
        publishes the trace as failed; otherwise the GPU is synchronised (so the last stage's time is real), the
        stages close and the trace is published as answered or cancelled. Use it inside the generation lock."""
        self.generation_started(vision_module, vision_gate)
        try:
            yield
            gpu_reader.synchronize()
        except BaseException:
            self.finish(TraceOutcome.FAILED)
            raise
        self.generation_ended()
        self.finish(TraceOutcome.CANCELLED if cancelled() else TraceOutcome.ANSWERED)

    def generation_started(self, vision_module: torch.nn.Module | None = None,
                           vision_gate: Callable[[], bool] | None = None) -> None:
        """Inside the generation lock: reset the peak counters and watch the vision tower's forwards (only those
        for which `vision_gate` says yes, where several answers share the model: the continuous batcher)."""
        gpu_reader.reset_peaks()
        self._mark = self._generation_started = time.perf_counter()
        if vision_module is not None:
            def mine() -> bool:
                return vision_gate is None or vision_gate()

            self._hooks = [
                vision_module.register_forward_pre_hook(lambda *_: self._vision_started() if mine() else None),
                vision_module.register_forward_hook(lambda *_: self._vision_ended() if mine() else None),
            ]

    def _vision_started(self) -> None:
        if self._first_token_seen:  # a model that runs its vision tower again while decoding: leave decode whole
            return
        gpu_reader.synchronize()  # what was queued before the tower belongs to prefill
        self._prefill_peaks = _merge(self._prefill_peaks, gpu_reader.peaks_gb())
        gpu_reader.reset_peaks()
        self._vision_open_at = time.perf_counter()

    def _vision_ended(self) -> None:
        if self._first_token_seen:
            return
        gpu_reader.synchronize()  # the tower's kernels have run when its forward returns on the host
        now = time.perf_counter()
        if self._vision_open_at is not None:
            self._vision_s += now - self._vision_open_at
        peaks = gpu_reader.peaks_gb()
        gpu_reader.reset_peaks()
        first = self._vision[0] if self._vision else (self._vision_open_at or now)
        self._vision = (first, now, _merge(self._vision[2] if self._vision else {}, peaks))
        self._mark = now  # prefill's band resumes after the vision tower

    def first_token(self) -> None:
        """The first new token exists: prefill ends, decode begins."""
        if self._first_token_seen:
            return
        self._first_token_seen = True
        self._first_token_at = time.perf_counter()
        self._close_prefill(self._first_token_at)

    def _close_prefill(self, now: float) -> None:
        if self._vision is None and self._vision_open_at is not None:  # it failed inside the vision tower
            self._vision = (self._vision_open_at, now, gpu_reader.peaks_gb())
            gpu_reader.reset_peaks()
            self._mark = now
        vision_start, vision_end, vision_peaks = self._vision or (self._mark, self._mark, {})
        self._add("vision", vision_start, vision_end, vision_peaks)
        self._add("prefill", self._mark, now, _merge(self._prefill_peaks, gpu_reader.peaks_gb()))
        gpu_reader.reset_peaks()
        self._mark = now

    def generation_ended(self) -> dict[str, float]:
        """Close the open stages; return the peak GB per device over the whole generation (the answer's)."""
        now = time.perf_counter()
        self._remove_hooks()
        if not self._first_token_seen:  # failed or cancelled before any token
            self._first_token_seen = True
            self._close_prefill(now)
        self._add("decode", self._mark, now, gpu_reader.peaks_gb())
        self._end = now
        self._end_wall = self._stages[-1].end
        overall: dict[str, float] = {}
        for stage in self._stages[1:]:  # preprocess is not a peak (see the module docstring)
            overall = _merge(overall, stage.peak_memory_gb)
        self._peaks = overall
        return overall

    def readings(self) -> StageReadings:
        """The boundaries and peaks the bands show, for the Answer (after generation_ended())."""
        return StageReadings(
            prepared_s=self._prepared_s, started=self._opened, preprocessed=self._preprocessed,
            generation_started=self._generation_started, vision_s=self._vision_s,
            first_token=self._first_token_at, ended=self._end if self._end is not None else time.perf_counter(),
            peaks=dict(self._peaks),
        )

    def finish(self, outcome: TraceOutcome) -> QueryTrace:
        """Publish the trace: answered, cancelled or failed (a failure closes whatever stage was open)."""
        if self._end is None:
            self.generation_ended()
        self._outcome = TraceOutcome(outcome)  # a plain string from a caller still becomes the enum
        trace = self.trace()
        with _lock:
            _running.pop(self.query_id, None)
            _finished.append(trace)
        return trace

    # -- reading ---------------------------------------------------------------------------------
    def trace(self) -> QueryTrace:
        return QueryTrace(
            query_id=self.query_id,
            model=self.model,
            question=self.question,
            start=self._start + self._to_wall,
            end=self._end_wall,
            outcome=self._outcome,
            stages=tuple(self._stages),
        )

    def _add(self, stage: str, start: float, end: float, peaks: dict[str, float]) -> None:
        self._stages.append(StageMark(stage, start + self._to_wall, max(start, end) + self._to_wall, dict(peaks)))

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


def traces(since: float | None = None) -> tuple[QueryTrace, ...]:
    """Finished and running queries that overlap [since, now], by start time (all kept ones if since is None)."""
    with _lock:
        running = [clock.trace() for clock in _running.values()]
        finished = _finished.items()
    found = [t for t in (*finished, *running) if since is None or t.end is None or t.end >= since]
    return tuple(sorted(found, key=lambda t: t.start))


def for_query(query: Query) -> QueryTrace | None:
    """The trace of this very Query object (finished or running), if it was asked."""
    with _lock:
        query_id = _by_query.get(query)
        if query_id is None:
            return None
        if query_id in _running:
            return _running[query_id].trace()
    return next((t for t in _finished.items() if t.query_id == query_id), None)


def clear() -> None:
    """Forget finished traces (running ones stay: their queries are still going)."""
    _finished.clear()
