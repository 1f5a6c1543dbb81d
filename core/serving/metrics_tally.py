"""What Prometheus counts about finished requests: answers by status and three histograms (time to first
token, decode tokens/s, queue wait), kept as one immutable record replaced whole on every finished request,
so a scrape reads one consistent state without holding up the scheduler's worker."""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, replace

from core.records import FinishedRequest
from core.statuses import RequestStatus

# Bucket bounds: a 7B model on one GPU answers its first token in 0.1-2 s and decodes 10-100 tokens/s; the
# demo model and a busy queue sit at the ends, which the outer buckets catch.
TTFT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
TOKENS_PER_S_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
QUEUE_WAIT_BUCKETS_S = (0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
FINISHED_STATUSES = (RequestStatus.DONE, RequestStatus.FAILED, RequestStatus.REFUSED, RequestStatus.CANCELLED)


@dataclass(frozen=True)
class HistogramTally:
    """Observations per bucket (not cumulative; the last is above every bound), their sum and count."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float = 0.0

    @classmethod
    def empty(cls, bounds: tuple[float, ...]) -> HistogramTally:
        return cls(bounds, (0,) * (len(bounds) + 1))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, value: float) -> HistogramTally:
        slot = bisect.bisect_left(self.bounds, value)  # Prometheus buckets are "less than or equal to"
        counts = list(self.counts)
        counts[slot] += 1
        return replace(self, counts=tuple(counts), total=self.total + value)

    def cumulative(self) -> list[tuple[str, float]]:
        """Prometheus's (le, cumulative count) pairs, ending with +Inf."""
        pairs, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts):
            running += count
            pairs.append((bound, float(running)))
        return pairs


@dataclass(frozen=True)
class AnswerTallies:
    """Everything counted so far, at one instant."""

    by_status: tuple[tuple[str, int], ...]
    time_to_first_token_s: HistogramTally
    tokens_per_s: HistogramTally
    queue_wait_s: HistogramTally


class AnswerCounter:
    """A scheduler listener (Scheduler.add_listener) counting every finished request it is told of."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tallies = AnswerTallies(
            by_status=tuple((str(s), 0) for s in FINISHED_STATUSES),
            time_to_first_token_s=HistogramTally.empty(TTFT_BUCKETS_S),
            tokens_per_s=HistogramTally.empty(TOKENS_PER_S_BUCKETS),
            queue_wait_s=HistogramTally.empty(QUEUE_WAIT_BUCKETS_S),
        )

    def tallies(self) -> AnswerTallies:
        return self._tallies

    def __call__(self, finished: FinishedRequest) -> None:
        with self._lock:
            now = self._tallies
            counts = dict(now.by_status)
            counts[str(finished.status)] = counts.get(str(finished.status), 0) + 1
            changes: dict[str, object] = {"by_status": tuple(counts.items())}
            # A request cancelled while it waited never left the queue: its wait is not a queue wait.
            if not (finished.status == RequestStatus.CANCELLED and finished.run_s == 0):
                changes["queue_wait_s"] = now.queue_wait_s.observe(finished.waited_s)
            answer = finished.answer
            if finished.status == RequestStatus.DONE and answer is not None:
                # The model's own time to its first token: preparing and encoding the question, the vision
                # tower and prefill (the stage clock's readings), not the queue wait counted above.
                t = answer.timings
                changes["time_to_first_token_s"] = now.time_to_first_token_s.observe(t.preprocess + t.vision + t.prefill)
                if answer.output_tokens > 1 and answer.tokens_per_s > 0:  # one token has no decode rate
                    changes["tokens_per_s"] = now.tokens_per_s.observe(answer.tokens_per_s)
            self._tallies = replace(now, **changes)  # type: ignore[arg-type]
