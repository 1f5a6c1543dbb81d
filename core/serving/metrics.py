"""Prometheus metrics, every series named `loupe_*` (the prometheus-client library): on the API server's
`GET /metrics` (core/serving/api.py) and, opt-in, on a port of their own for the dashboard process
(`export_metrics`, setting `metrics_port`).

Decisions:
- Nothing is updated in the background for Prometheus: at scrape time a custom collector reads the latest
  sample of the process's one sampler (core/telemetry/sampler.py, itself fed by the one GPU reader), each
  scheduler's own snapshot (queue length, requests in flight), and the answer counters' latest immutable
  record (core/serving/metrics_tally.py, a scheduler listener).
- GPU series carry the labels gpu (NVML's index, nvidia-smi's), uuid and name. A field a card cannot report,
  and every GPU series on a machine without a GPU, is absent rather than 0, so a dashboard shows "no data"
  instead of a false zero.
- The API's /metrics needs the API token when `api_token` is set, like /v1/* (core/serving/api_guards.py):
  it names the GPUs and the load, which /health does not; Prometheus sends the token with `authorization:`
  in its scrape config. The dashboard's port has no token: it listens on `metrics_address` (loopback unless
  set otherwise).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from core.errors import ConfigError
from core.serving.metrics_tally import AnswerCounter, HistogramTally
from core.settings import Settings
from core.telemetry.snapshots import GpuSnapshot, TelemetrySample

if TYPE_CHECKING:
    from core.serving.scheduler import Scheduler

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the text format generate_latest() writes
GPU_LABELS = ("gpu", "uuid", "name")
_GPU_SERIES: tuple[tuple[str, str, Callable[[GpuSnapshot], float | None]], ...] = (
    ("loupe_gpu_memory_used_bytes", "Memory used on the GPU by every process (what nvidia-smi shows).",
     lambda g: g.used_bytes),
    ("loupe_gpu_memory_total_bytes", "The GPU's memory.", lambda g: g.total_bytes),
    ("loupe_gpu_process_memory_bytes", "Memory this Loupe process holds on the GPU, as NVML attributes it.",
     lambda g: g.process_bytes),
    ("loupe_gpu_utilization_percent", "Percent of the last sample period in which a kernel ran on the GPU.",
     lambda g: g.utilization_pct),
)


class LoupeMetrics:
    """One registry holding Loupe's collector: `text()` is what a scrape returns."""

    def __init__(self, *, schedulers: Callable[[], Iterable[Scheduler]],
                 sample: Callable[[], TelemetrySample | None]) -> None:
        self.counter = AnswerCounter()
        self._schedulers = schedulers
        self._sample = sample
        self._watched: set[int] = set()
        self._lock = threading.Lock()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # a collector is anything with collect()

    def watch(self, scheduler: Scheduler) -> None:
        """Count `scheduler`'s finished requests from now on (once per scheduler)."""
        with self._lock:
            if id(scheduler) in self._watched:
                return
            self._watched.add(id(scheduler))
        scheduler.add_listener(self.counter)

    def text(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        sample = self._sample()
        if sample is not None:
            yield from _gpu_families(sample.gpus)
            rss = GaugeMetricFamily("loupe_process_resident_memory_bytes", "This Loupe process's resident memory.")
            rss.add_metric([], sample.process_rss_bytes)
            yield rss
        snapshots = [s.snapshot() for s in self._schedulers()]
        waiting = GaugeMetricFamily("loupe_queue_waiting", "Questions waiting in the queue (every model's).")
        waiting.add_metric([], sum(s.waiting for s in snapshots))
        running = GaugeMetricFamily("loupe_requests_in_flight", "Questions being answered now.")
        running.add_metric([], sum(s.in_flight for s in snapshots))
        yield from (waiting, running)
        tallies = self.counter.tallies()
        answers = CounterMetricFamily("loupe_answers", "Finished requests by how they ended.", labels=["status"])
        for status, count in tallies.by_status:
            answers.add_metric([status], count)
        yield answers
        yield _histogram("loupe_time_to_first_token_seconds", "Seconds from the question's preparation to its first "
                         "token (encoding, vision, prefill), queue wait not included.", tallies.time_to_first_token_s)
        yield _histogram("loupe_tokens_per_second", "Decode rate of each answer: tokens after the first / decode seconds.",
                         tallies.tokens_per_s)
        yield _histogram("loupe_queue_wait_seconds", "Seconds a question waited in the queue before it was started.",
                         tallies.queue_wait_s)


def _gpu_families(gpus: tuple[GpuSnapshot, ...]) -> Iterator[Metric]:
    if not gpus:
        return
    for name, documentation, read in _GPU_SERIES:
        family = GaugeMetricFamily(name, documentation, labels=list(GPU_LABELS))
        for gpu in gpus:
            value = read(gpu)
            if value is not None:
                family.add_metric([str(gpu.index), gpu.uuid, gpu.name], value)
        yield family


def _histogram(name: str, documentation: str, tally: HistogramTally) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, documentation, buckets=tally.cumulative(), sum_value=tally.total)


# -- the process's metrics (the dashboard's), on a port of their own ------------------------------------
_process: LoupeMetrics | None = None
_exported: str | None = None
_process_lock = threading.Lock()


def process_metrics() -> LoupeMetrics:
    """This process's metrics over every loaded model's queue and the shared sampler."""
    global _process
    with _process_lock:
        if _process is None:
            from core.serving.scheduler import live_schedulers
            from core.telemetry.sampler import get_sampler

            made = LoupeMetrics(schedulers=live_schedulers, sample=lambda: get_sampler().latest())
            for scheduler in live_schedulers(on_new=made.watch):  # and every scheduler made from now on
                made.watch(scheduler)
            _process = made
        return _process


def export_metrics(settings: Settings) -> str | None:
    """Serve this process's metrics on `metrics_port` (0: off, returns None), once per process; the URL."""
    global _exported
    if not settings.metrics_port:
        return None
    metrics = process_metrics()
    with _process_lock:
        if _exported is None:
            from prometheus_client import start_http_server

            address = settings.metrics_address
            try:
                start_http_server(settings.metrics_port, addr=address, registry=metrics.registry)
            except OSError as exc:
                raise ConfigError(f"setting 'metrics_port' is {settings.metrics_port}, but Loupe cannot listen on "
                                  f"{address}:{settings.metrics_port} ({exc.strerror or exc}); choose another port, "
                                  "or 0 for no metrics port") from None
            host = f"[{address}]" if ":" in address else address
            _exported = f"http://{host}:{settings.metrics_port}/metrics"
        return _exported
