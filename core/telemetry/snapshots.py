"""The telemetry records: one GPU at one instant (GpuSnapshot, what the one GPU reader returns), a whole sample
(every GPU, this process), and a query's stage timeline for the memory chart. Frozen: snapshots never change."""
from __future__ import annotations

from dataclasses import dataclass

from core.statuses import TraceOutcome


@dataclass(frozen=True)
class GpuSnapshot:
    """One GPU at one instant in bytes, read by core/telemetry/gpu_reader.py; None where it could not be read.
    `index` is NVML's number (nvidia-smi's) for cards read through NVML, CUDA's for those read through torch."""

    index: int
    name: str
    used_bytes: int | None = None  # whole card, every process (what nvidia-smi shows)
    total_bytes: int | None = None
    process_bytes: int | None = None  # this process on this card, as NVML attributes it
    utilization_pct: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    allocated_bytes: int | None = None  # torch's allocator, once this process has initialised CUDA
    reserved_bytes: int | None = None
    peak_bytes: int | None = None  # allocator peak since the backend last reset it (each query stage)
    free_bytes: int | None = None  # what the driver reports free on the whole card
    compute_capability: tuple[int, int] | None = None
    cuda_index: int | None = None  # how CUDA numbers this card in this process (CUDA_VISIBLE_DEVICES applied); None: hidden
    uuid: str = ""  # NVML's "GPU-…" (a whole card) or "MIG-…" (a MIG device); "" when it could not be read


@dataclass(frozen=True)
class TelemetrySample:
    """Everything sampled at one instant: wall-clock time, every GPU, and this process's RSS and CPU use."""

    time: float  # seconds since the epoch (time.time()), the clock stage markers use too
    gpus: tuple[GpuSnapshot, ...]
    process_rss_bytes: int
    process_cpu_pct: float | None  # since the previous sample; None for the first one


@dataclass(frozen=True)
class StageMark:
    """One stage of one query (preprocess, vision, prefill, decode): wall-clock span and peak GB per device."""

    stage: str
    start: float  # seconds since the epoch
    end: float
    peak_memory_gb: dict[str, float]  # "cuda:N" → allocator peak GB in this stage; "cpu" → RSS GB at its end


@dataclass(frozen=True)
class QueryTrace:
    """One query's timeline for the memory chart: start, end (None while running), its stages in order."""

    query_id: str
    model: str
    question: str
    start: float  # seconds since the epoch
    end: float | None
    outcome: TraceOutcome
    stages: tuple[StageMark, ...]
