"""What people and files see of samples: the status line, the `gpus --json` object, CSV rows.

Memory is in GB of 10⁹ bytes, the unit of the answer record's `peak_memory_gb`, so the footer and the
answer agree (nvidia-smi's MiB ÷ 953.7 gives the same figure).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from core.table_export import ExportTable
from core.telemetry.snapshots import GpuSnapshot, QueryTrace, TelemetrySample

GB = 1e9


def _gb(value: int | None, digits: int = 3) -> float | None:
    return round(value / GB, digits) if value is not None else None


def gpu_state(gpu: GpuSnapshot) -> str:
    """'ok', or why this card gave no memory reading."""
    return "ok" if gpu.used_bytes is not None and gpu.total_bytes is not None else "NVML could not read this card's memory"


def status_line(sample: TelemetrySample | None) -> str:
    """'GPU0: 15.2GB/22.2GB | GPU1: 8.5GB/22.2GB', or 'CPU: RSS 0.4 GB | 12% CPU' without a GPU."""
    if sample is None:
        return "telemetry: no sample yet"
    if not sample.gpus:
        cpu = f" | {sample.process_cpu_pct:.0f}% CPU" if sample.process_cpu_pct is not None else ""
        rss = sample.process_rss_bytes / GB
        return f"CPU: RSS {rss:.{2 if rss < 1 else 1}f} GB{cpu}"
    return " | ".join(f"GPU{gpu.index}: {memory_text(gpu)}" for gpu in sample.gpus)


def memory_text(gpu: GpuSnapshot) -> str:
    """'15.2GB/22.2GB' (used/total, whole card), or 'no reading'."""
    if gpu.used_bytes is None or gpu.total_bytes is None:
        return "no reading"
    return f"{gpu.used_bytes / GB:.1f}GB/{gpu.total_bytes / GB:.1f}GB"


def gpus_json(sample: TelemetrySample, state: str) -> dict[str, Any]:
    """The `python -m core gpus --json` object (its keys are a contract).

    With no GPU reading, `gpus` is empty and the top-level `state` says why; `process_rss_gb` is
    always there. Each card carries its own `state` too ('ok', or why its memory could not be read).
    """
    return {
        "state": state,
        "gpus": [
            {
                "index": g.index,
                "name": g.name,
                "uuid": g.uuid,
                "cuda_index": g.cuda_index,  # how CUDA numbers it here (CUDA_VISIBLE_DEVICES applied); null: hidden
                "used_gb": _gb(g.used_bytes),
                "total_gb": _gb(g.total_bytes),
                "state": gpu_state(g),
                "process_gb": _gb(g.process_bytes),
                "utilization_pct": g.utilization_pct,
                "temperature_c": g.temperature_c,
                "power_w": round(g.power_w, 1) if g.power_w is not None else None,
                "allocated_gb": _gb(g.allocated_bytes),
                "reserved_gb": _gb(g.reserved_bytes),
            }
            for g in sample.gpus
        ],
        "process_rss_gb": _gb(sample.process_rss_bytes),
        "process_cpu_pct": sample.process_cpu_pct,
    }


CSV_COLUMNS = (
    "time", "epoch_s", "gpu", "name", "used_gb", "total_gb", "process_gb", "utilization_pct",
    "temperature_c", "power_w", "allocated_gb", "reserved_gb", "peak_gb", "process_rss_gb", "process_cpu_pct",
)


def rows(samples: Iterable[TelemetrySample]) -> list[dict[str, Any]]:
    """One row per sample and GPU (one row per sample, GPU columns empty, without a GPU): the CSV export."""
    table: list[dict[str, Any]] = []
    for sample in samples:
        common = {
            "time": dt.datetime.fromtimestamp(sample.time).isoformat(timespec="milliseconds"),
            "epoch_s": round(sample.time, 3),
            "process_rss_gb": _gb(sample.process_rss_bytes),
            "process_cpu_pct": sample.process_cpu_pct,
        }
        per_gpu = [{
            "gpu": g.index, "name": g.name, "used_gb": _gb(g.used_bytes), "total_gb": _gb(g.total_bytes),
            "process_gb": _gb(g.process_bytes), "utilization_pct": g.utilization_pct,
            "temperature_c": g.temperature_c, "power_w": g.power_w, "allocated_gb": _gb(g.allocated_bytes),
            "reserved_gb": _gb(g.reserved_bytes), "peak_gb": _gb(g.peak_bytes),
        } for g in sample.gpus] or [{}]
        table.extend({c: {**common, **gpu}.get(c) for c in CSV_COLUMNS} for gpu in per_gpu)
    return table


def export_table(samples: Iterable[TelemetrySample]) -> ExportTable:
    """The samples as the GPU monitor's downloads (CSV and XLSX: core/table_export.py)."""
    return ExportTable.from_dicts("loupe-telemetry", CSV_COLUMNS, rows(samples))


def trace_rows(traces: Iterable[QueryTrace], zone: dt.tzinfo | None = None) -> list[dict[str, Any]]:
    """One row per query, newest first: when (in `zone`; the server's local time without one), outcome,
    seconds per stage, and peak GB per device per stage."""
    table = []
    for trace in sorted(traces, key=lambda t: t.start, reverse=True):
        row: dict[str, Any] = {
            "started": dt.datetime.fromtimestamp(trace.start, zone).strftime("%H:%M:%S"),
            "outcome": trace.outcome,
            "question": trace.question,
            "total_s": round(trace.end - trace.start, 3) if trace.end is not None else None,
        }
        for stage in trace.stages:
            row[f"{stage.stage}_s"] = round(stage.end - stage.start, 3)
            for device, gb in stage.peak_memory_gb.items():
                row[f"{stage.stage} {device} GB"] = round(gb, 3)
        row["model"] = trace.model
        table.append(row)
    return table
