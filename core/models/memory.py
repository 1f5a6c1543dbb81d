"""Peak memory around one answer: the CUDA allocator's peak per GPU, or the process RSS on CPU."""
from __future__ import annotations

import psutil


def _cuda_devices() -> list[int]:
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return []
    return list(range(torch.cuda.device_count()))


def reset_peaks() -> None:
    import torch

    for index in _cuda_devices():
        torch.cuda.reset_peak_memory_stats(index)


def synchronize() -> None:
    import torch

    for index in _cuda_devices():
        torch.cuda.synchronize(index)


def peaks_gb() -> dict[str, float]:
    """'cuda:N' → peak allocated GB since reset_peaks(), plus 'cpu' → current process RSS in GB."""
    import torch

    peaks = {f"cuda:{i}": torch.cuda.max_memory_allocated(i) / 1e9 for i in _cuda_devices()}
    peaks["cpu"] = psutil.Process().memory_info().rss / 1e9
    return peaks
