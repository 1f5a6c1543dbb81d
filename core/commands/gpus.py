"""`python -m core gpus [--json]`: one telemetry sample of every GPU (and this process), then exit.

Exits 0 with or without a GPU: "no GPU" is a reading, not a failure. `--json` prints one object:
`state` ("ok" or why there is no GPU reading), `gpus` (each with `index`, `name`, `used_gb`,
`total_gb`, `state`, plus process/utilisation/temperature/power figures; empty without a GPU),
`process_rss_gb` (always) and `process_cpu_pct`.
"""
from __future__ import annotations

import argparse
import json

from core.telemetry import nvml, readout
from core.telemetry.sampler import read_sample


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("gpus", help="print one reading of every GPU's memory, load and temperature")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.set_defaults(func=run)


def _optional(value: float | None, unit: str, digits: int = 0) -> str:
    return f"{value:.{digits}f}{unit}" if value is not None else "n/a"


def run(args: argparse.Namespace) -> int:
    sample = read_sample()
    state = nvml.state()
    if args.json:
        print(json.dumps(readout.gpus_json(sample, state), ensure_ascii=False))
        return 0
    if state != "ok":
        print(f"no GPU reading: {state}")
    for gpu in sample.gpus:
        process = _optional(gpu.process_bytes / readout.GB if gpu.process_bytes is not None else None, " GB", 2)
        print(f"GPU{gpu.index} {gpu.name}: {readout.memory_text(gpu)} · this process {process} · "
              f"util {_optional(gpu.utilization_pct, '%')} · {_optional(gpu.temperature_c, '°C')} · "
              f"{_optional(gpu.power_w, ' W')}")
    print(f"process RSS {sample.process_rss_bytes / readout.GB:.2f} GB")
    return 0
