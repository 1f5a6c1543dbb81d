"""Load progress: run a blocking model load in a worker thread and report, from the caller's thread, how it goes.

Reported through the backend's ProgressCallback as LoadProgress(fraction, message):
- before: the shard files and their size, then per GPU what the plan puts there
  ("Loading layers 0-15 + vit, vision_proj, tok_embeddings to GPU0 ... 14.2 GB");
- during, every POLL_S: the memory the load has allocated on each GPU so far, against the plan's weights;
- after: per GPU the layers placed and what torch's allocator holds, the shard files read, the elapsed time.

The callback runs in the caller's thread while the load runs in the worker, so a Streamlit page can update
its widgets from it. Progress is measured from the allocator, not from transformers' own progress bar,
which cannot be hooked without patching its internals.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.records import ShardPlan
from core.telemetry import gpu_reader


@dataclass(frozen=True)
class LoadProgress:
    """One step of loading a model: how far along (0..1) and a log line for the analyst."""

    fraction: float
    message: str


ProgressCallback = Callable[[LoadProgress], None]


T = TypeVar("T")
POLL_S = 0.5
GB = 1e9
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _size(nbytes: int) -> str:
    return f"{nbytes / GB:.1f} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:.1f} MB"


def shard_files(folder: Path | str) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())


def _short(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def placement_lines(plan: ShardPlan) -> list[str]:
    """'Loading layers 0-15 + vit, tok_embeddings to GPU0 ... 14.2 GB', one per GPU of the plan."""
    lines = []
    for g in plan.gpus:
        extra = f" + {', '.join(_short(m) for m in g.modules)}" if g.modules else ""
        lines.append(f"Loading layers {g.layers[0]}-{g.layers[1]}{extra} to GPU{g.index} ... "
                     f"{g.weights_bytes / GB:.1f} GB")
    return lines


def _allocated(indices: list[int]) -> dict[int, int]:
    """CUDA index → bytes torch's allocator holds there (nothing before the load initialises CUDA)."""
    return {g.index: g.allocated_bytes or 0 for g in gpu_reader.read_cuda(driver_free=False) if g.index in indices}


def describe_failure(error: BaseException) -> str:
    """What went wrong while loading, for the analyst (an out-of-memory says that nothing was kept)."""
    text = str(error)
    if "OutOfMemory" in type(error).__name__ or "out of memory" in text.lower():
        return ("a GPU ran out of memory while loading the weights; everything loaded so far was freed. "
                "Check `python -m core plan` and what else runs on the GPUs.")
    if isinstance(error, (OSError, ValueError, KeyError)):
        return text
    return f"{type(error).__name__}: {text}"


def run_watched(
    load: Callable[[], T],
    *,
    folder: Path | str,
    plan: ShardPlan | None,
    report: ProgressCallback,
    span: tuple[float, float] = (0.2, 0.95),
) -> T:
    """Run `load()` in a worker thread; report its progress here; return its result or raise its error."""
    files = shard_files(folder)
    size = sum(f.stat().st_size for f in files)
    low, high = span
    report(LoadProgress(low, f"Reading {len(files)} shard file{'s' if len(files) != 1 else ''} "
                             f"({_size(size)}) from {folder}"))
    for line in placement_lines(plan) if plan else []:
        report(LoadProgress(low, line))
    indices = [g.index for g in plan.gpus] if plan else []
    baseline = _allocated(indices)
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["result"] = load()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            box["error"] = exc

    started = time.perf_counter()
    worker = threading.Thread(target=work, name="loupe-load", daemon=True)
    worker.start()
    last = -1.0
    while worker.is_alive():
        worker.join(POLL_S)
        if not plan or not worker.is_alive():
            continue
        loaded = {i: max(0, b - baseline.get(i, 0)) for i, b in _allocated(indices).items()}
        done = min(1.0, sum(loaded.values()) / max(plan.weights_bytes, 1))
        if done - last < 0.01:
            continue
        last = done
        busy = next((g for g in plan.gpus if loaded.get(g.index, 0) < 0.99 * g.weights_bytes), plan.gpus[-1])
        report(LoadProgress(
            low + (high - low) * done,
            f"Loading layers {busy.layers[0]}-{busy.layers[1]} to GPU{busy.index} ... "
            f"{loaded.get(busy.index, 0) / GB:.1f} of {busy.weights_bytes / GB:.1f} GB "
            f"({time.perf_counter() - started:.0f} s)",
        ))
    if "error" in box:
        raise box.pop("error")
    elapsed = time.perf_counter() - started
    after = _allocated(indices)
    for g in plan.gpus if plan else []:
        held = after.get(g.index, 0) - baseline.get(g.index, 0)
        report(LoadProgress(high, f"GPU{g.index}: layers {g.layers[0]}-{g.layers[1]} placed, {held / GB:.1f} GB "
                                  f"allocated (plan {g.weights_bytes / GB:.1f} GB of weights)"))
    report(LoadProgress(high, f"Read {len(files)} shard file{'s' if len(files) != 1 else ''} in {elapsed:.1f} s"))
    return box["result"]
