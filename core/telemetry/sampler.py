"""The sampler: one background thread per process reads every GPU (and this process) into a ring buffer.

Every browser session reads the same buffer (`get_sampler()`), so ten open tabs cost one thread.
Each tick reads every GPU through core/telemetry/gpu_reader.py (NVML numbering; a field the card cannot
report is None, never an exception; torch's allocator figures once this process has initialised CUDA)
and the process's RSS and CPU use, so with no GPU the buffer still says something. nvidia-ml-py is used
directly rather than nvitop: core/telemetry/nvml.py already turns unsupported fields into None, and the
GPU benchmark machines have nvidia-ml-py but not nvitop.
"""
from __future__ import annotations

import logging
import math
import threading
import time

import psutil

from core.errors import ConfigError
from core.settings import Settings, load_settings
from core.telemetry import nvml
from core.telemetry.gpu_reader import GpuReader
from core.telemetry.ring import Ring
from core.telemetry.snapshots import GpuSnapshot, TelemetrySample

log = logging.getLogger("loupe.telemetry")


class SampleReader:
    """Reads one TelemetrySample now: every GPU through the one GPU reader, and this process's RSS and CPU."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cpu_primed = False
        self._gpus = GpuReader()

    def read(self) -> TelemetrySample:
        rss, cpu_pct = self.read_process()
        return TelemetrySample(time=time.time(), gpus=self.read_gpus(), process_rss_bytes=rss, process_cpu_pct=cpu_pct)

    def read_gpus(self) -> tuple[GpuSnapshot, ...]:
        """Every GPU NVML sees, now (empty without a GPU reading)."""
        return self._gpus.read()

    def read_process(self) -> tuple[int, float | None]:
        """This process's RSS (bytes) and CPU % since the previous call (None on the first: no baseline)."""
        cpu = self._process.cpu_percent(interval=None)
        cpu_pct = cpu if self._cpu_primed else None  # the first call has no baseline and says 0.0
        self._cpu_primed = True
        return self._process.memory_info().rss, cpu_pct


def read_sample() -> TelemetrySample:
    """One sample now, without starting any thread (process CPU % is None: it needs a previous reading)."""
    return SampleReader().read()


class Sampler:
    """A daemon thread appending one TelemetrySample every `interval_s` to a ring holding `window_s`."""

    def __init__(self, interval_s: float = 0.5, window_s: float = 900.0) -> None:
        if not interval_s > 0:
            raise ConfigError(f"sample_interval_s must be above 0, got {interval_s}")
        if not window_s >= interval_s:
            raise ConfigError(f"sample_window_s ({window_s}) must be at least sample_interval_s ({interval_s})")
        self.interval_s = interval_s
        self.window_s = window_s
        self.ring: Ring[TelemetrySample] = Ring(math.ceil(window_s / interval_s - 1e-9))  # 0.3/0.1 is 2.9999…
        self.cpu_seconds = 0.0  # CPU time the sampling thread has used (time.thread_time)
        self.error: str | None = None  # the last unexpected failure of a tick, if any
        self._reader = SampleReader()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        """'ok' when GPUs are read, else why not (then samples carry process RSS and CPU only)."""
        return nvml.state()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Sampler:
        """Take the first sample now (so readers never see an empty buffer), then sample in the background."""
        with self._lock:
            if self.running:
                return self
            if self.state != "ok":
                log.info("no GPU reading (%s): sampling this process's memory and CPU instead", self.state)
            self._tick()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="loupe-telemetry", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout_s)
            self._thread = None

    def samples(self, last_s: float | None = None) -> tuple[TelemetrySample, ...]:
        """The buffer, oldest first; only the last `last_s` seconds of it if given."""
        if last_s is None:
            return self.ring.items()
        return self.ring.since(time.time() - last_s, key=lambda s: s.time)

    def latest(self) -> TelemetrySample | None:
        return self.ring.latest()

    def _tick(self) -> None:
        try:
            self.ring.append(self._reader.read())
        except Exception as exc:  # noqa: BLE001 - the thread must outlive any one bad reading
            if self.error is None:
                log.warning("telemetry sample failed (reported once): %s", exc, exc_info=True)
            self.error = f"{type(exc).__name__}: {exc}"

    def _run(self) -> None:
        # Ticks are scheduled on a fixed grid so slow readings do not stretch the interval.
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self._tick()
            self.cpu_seconds = time.thread_time()
            next_at += self.interval_s
            if next_at < time.monotonic():  # fell behind (machine asleep, debugger): skip, do not burst
                next_at = time.monotonic() + self.interval_s


_shared: Sampler | None = None
_shared_lock = threading.Lock()


def get_sampler(settings: Settings | None = None) -> Sampler:
    """The process's one running sampler, started on first use with the settings' interval and window.

    Later calls return the same sampler whatever settings they pass: the buffer is shared by design.
    """
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.running:
            s = settings or load_settings()
            _shared = Sampler(s.sample_interval_s, s.sample_window_s).start()
        return _shared
