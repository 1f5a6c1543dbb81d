"""The sampler: one background thread per process reads every GPU (and this process) into a ring buffer.

Every browser session reads the same buffer (`get_sampler()`), so ten open tabs cost one thread.
Each tick reads, per GPU, through core.telemetry.nvml (a field the card cannot report is None, never
an exception): memory used/total, this process's memory, utilisation, temperature and power; once
this process has initialised CUDA, torch's allocator figures for the same card too (matched by UUID,
so CUDA_VISIBLE_DEVICES renumbering does not mislabel them). GPUs are numbered as NVML (nvidia-smi)
numbers them. Every tick also reads the process's RSS and CPU use, so with no GPU the buffer still
says something. nvidia-ml-py is used directly rather than nvitop: core/telemetry/nvml.py already
turns unsupported fields into None, and the GPU benchmark machines have nvidia-ml-py but not nvitop.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from typing import Any

import psutil

from core.errors import ConfigError
from core.records import GpuSnapshot, TelemetrySample
from core.settings import Settings, load_settings
from core.telemetry import nvml
from core.telemetry.ring import Ring

log = logging.getLogger("loupe.telemetry")


class SampleReader:
    """Reads one TelemetrySample now. Keeps what never changes (handles, names, UUIDs) and the CPU baseline."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self._cpu_primed = False
        self._cards: list[tuple[int, Any, str, str]] | None = None  # (index, handle, name, uuid)
        self._torch_devices: dict[str, int] | None = None  # NVML UUID → torch device index

    def read(self) -> TelemetrySample:
        rss, cpu_pct = self.read_process()
        return TelemetrySample(time=time.time(), gpus=self.read_gpus(), process_rss_bytes=rss, process_cpu_pct=cpu_pct)

    def read_gpus(self) -> tuple[GpuSnapshot, ...]:
        """Every GPU NVML sees, now (empty without a GPU reading)."""
        return tuple(self._read_gpu(*card) for card in self._known_cards())

    def read_process(self) -> tuple[int, float | None]:
        """This process's RSS (bytes) and CPU % since the previous call (None on the first: no baseline)."""
        cpu = self._process.cpu_percent(interval=None)
        cpu_pct = cpu if self._cpu_primed else None  # the first call has no baseline and says 0.0
        self._cpu_primed = True
        return self._process.memory_info().rss, cpu_pct

    def _known_cards(self) -> list[tuple[int, Any, str, str]]:
        if self._cards is None:
            self._cards = []
            if nvml.state() == "ok":
                import pynvml

                for info in nvml.gpus():
                    handle = nvml.query(pynvml.nvmlDeviceGetHandleByIndex, info.index)
                    card_uuid = nvml.query(pynvml.nvmlDeviceGetUUID, handle) if handle is not None else None
                    if isinstance(card_uuid, bytes):
                        card_uuid = card_uuid.decode()
                    if handle is not None:
                        self._cards.append((info.index, handle, info.name, card_uuid or ""))
        return self._cards

    def _read_gpu(self, index: int, handle: Any, name: str, card_uuid: str) -> GpuSnapshot:
        import pynvml

        mem = nvml.query(pynvml.nvmlDeviceGetMemoryInfo, handle)
        util = nvml.query(pynvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = nvml.query(pynvml.nvmlDeviceGetPowerUsage, handle)
        allocated, reserved, peak = self._allocator(card_uuid)
        return GpuSnapshot(
            index=index,
            name=name,
            used_bytes=int(mem.used) if mem is not None else None,
            total_bytes=int(mem.total) if mem is not None else None,
            process_bytes=self._process_bytes(handle, reserved),
            utilization_pct=int(util.gpu) if util is not None else None,
            temperature_c=nvml.query(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
            power_w=power_mw / 1000 if power_mw is not None else None,
            allocated_bytes=allocated,
            reserved_bytes=reserved,
            peak_bytes=peak,
        )

    def _process_bytes(self, handle: Any, reserved: int | None) -> int | None:
        """NVML's figure for this PID; 0 if NVML lists others but not us; None if it cannot say.

        Inside a container NVML reports host PIDs, so our PID is never listed even while torch holds
        memory on the card: that reads as None (unknown), not 0.
        """
        import pynvml

        processes = nvml.query(pynvml.nvmlDeviceGetComputeRunningProcesses, handle)
        if processes is None:
            return None
        mine = [p.usedGpuMemory for p in processes if p.pid == os.getpid()]
        if not mine:
            return None if reserved else 0
        return None if any(m is None for m in mine) else int(sum(mine))

    def _allocator(self, card_uuid: str) -> tuple[int | None, int | None, int | None]:
        """torch's allocated/reserved/peak bytes on this card, if this process has initialised CUDA."""
        torch = sys.modules.get("torch")  # never import torch just to look: the CLI must stay quick
        if torch is None or not torch.cuda.is_initialized():
            return None, None, None
        if self._torch_devices is None:
            self._torch_devices = {}
            for device in range(torch.cuda.device_count()):
                found = getattr(torch.cuda.get_device_properties(device), "uuid", None)
                if found is not None:
                    self._torch_devices[f"GPU-{found}"] = device
        device = self._torch_devices.get(card_uuid)
        if device is None:
            return None, None, None
        try:
            return (torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device),
                    torch.cuda.max_memory_allocated(device))
        except RuntimeError:  # a lost or reset device: these fields are empty, the NVML ones still count
            return None, None, None


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
