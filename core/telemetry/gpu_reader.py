"""The one GPU reader: every reading of GPU state goes through here and comes back as GpuSnapshot records.

- NVML, through core.telemetry.nvml.query (a field a card cannot report is None, never an exception): every
  card as nvidia-smi numbers it — memory used/free/total, this process's share, utilisation, temperature,
  power, compute capability. Once this process has initialised CUDA, torch's allocator figures for the same
  card join it, matched by UUID so CUDA_VISIBLE_DEVICES renumbering does not mislabel them (`cuda_index`).
- torch's allocator alone (read_cuda), numbered as CUDA numbers devices: what admission and load progress
  need, with the driver's free memory as CUDA reports it. Nothing is read before this process has
  initialised CUDA, and torch is never imported just to look: the CLI must stay quick.
- The allocator's peaks around one answer (reset_peaks, peaks_gb, synchronize).
"""
from __future__ import annotations

import os
import sys
from types import ModuleType

import psutil

from core.telemetry import nvml
from core.telemetry.snapshots import GpuSnapshot

_Card = tuple[int, object, str, str, "tuple[int, int] | None"]  # NVML index, handle, name, UUID, compute capability


class GpuReader:
    """Reads every NVML card now; keeps what never changes (handles, names, UUIDs, the torch device map)."""

    def __init__(self) -> None:
        self._cards: list[_Card] | None = None
        self._torch_devices: dict[str, int] | None = None  # NVML UUID → torch device index

    def read(self) -> tuple[GpuSnapshot, ...]:
        """Every GPU NVML sees, now (empty when nvml.state() is not 'ok')."""
        return tuple(self._read_card(*card) for card in self._known_cards())

    def _known_cards(self) -> list[_Card]:
        if self._cards is None:
            self._cards = []
            if nvml.state() == "ok":
                import pynvml

                for index in range(nvml.query(pynvml.nvmlDeviceGetCount) or 0):
                    handle = nvml.query(pynvml.nvmlDeviceGetHandleByIndex, index)
                    if handle is None:
                        continue
                    name = nvml.query(pynvml.nvmlDeviceGetName, handle) or f"GPU{index}"
                    card_uuid = nvml.query(pynvml.nvmlDeviceGetUUID, handle)
                    self._cards.append((index, handle, _text(name), _text(card_uuid or ""),
                                        nvml.query(pynvml.nvmlDeviceGetCudaComputeCapability, handle)))
        return self._cards

    def _read_card(self, index: int, handle: object, name: str, card_uuid: str,
                   capability: tuple[int, int] | None) -> GpuSnapshot:
        import pynvml

        mem = nvml.query(pynvml.nvmlDeviceGetMemoryInfo, handle)
        util = nvml.query(pynvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = nvml.query(pynvml.nvmlDeviceGetPowerUsage, handle)
        device = self._torch_device(card_uuid)
        allocated, reserved, peak = _allocator(device) if device is not None else (None, None, None)
        return GpuSnapshot(
            index=index, name=name,
            used_bytes=int(mem.used) if mem is not None else None,
            total_bytes=int(mem.total) if mem is not None else None,
            process_bytes=_process_bytes(handle, reserved),
            utilization_pct=int(util.gpu) if util is not None else None,
            temperature_c=nvml.query(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
            power_w=power_mw / 1000 if power_mw is not None else None,
            allocated_bytes=allocated, reserved_bytes=reserved, peak_bytes=peak,
            free_bytes=int(mem.free) if mem is not None else None,
            compute_capability=capability, cuda_index=device,
        )

    def _torch_device(self, card_uuid: str) -> int | None:
        torch = _torch_with_cuda()
        if torch is None:
            return None
        if self._torch_devices is None:
            self._torch_devices = {}
            for device in range(torch.cuda.device_count()):
                found = getattr(torch.cuda.get_device_properties(device), "uuid", None)
                if found is not None:
                    self._torch_devices[f"GPU-{found}"] = device
        return self._torch_devices.get(card_uuid)


def read_gpus() -> tuple[GpuSnapshot, ...]:
    """One reading of every GPU NVML sees (empty without a GPU reading; nvml.state() says why)."""
    return GpuReader().read()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _process_bytes(handle: object, reserved: int | None) -> int | None:
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


# -- torch's allocator, numbered as CUDA numbers devices ------------------------------------------------
def _torch_with_cuda() -> ModuleType | None:
    """torch, if this process has imported it and initialised CUDA; else None."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and torch.cuda.is_initialized() else None


def _allocator(device: int) -> tuple[int | None, int | None, int | None]:
    """torch's allocated/reserved/peak bytes on this CUDA device."""
    torch = sys.modules["torch"]
    try:
        return (torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device),
                torch.cuda.max_memory_allocated(device))
    except RuntimeError:  # a lost or reset device: these fields are empty, the NVML ones still count
        return None, None, None


def cuda_devices() -> list[int]:
    """The CUDA devices this process can read (none before it initialises CUDA)."""
    torch = _torch_with_cuda()
    return list(range(torch.cuda.device_count())) if torch is not None else []


def read_cuda(*, driver_free: bool = True) -> tuple[GpuSnapshot, ...]:
    """Every CUDA device of this process, `index` as CUDA numbers it: the allocator's figures and, with
    `driver_free`, the free and total memory the driver reports to CUDA (a context on every device)."""
    torch = _torch_with_cuda()
    if torch is None:
        return ()
    found = []
    for device in cuda_devices():
        free, total = torch.cuda.mem_get_info(device) if driver_free else (None, None)
        allocated, reserved, peak = _allocator(device)
        found.append(GpuSnapshot(
            index=device, name=torch.cuda.get_device_name(device), used_bytes=None if free is None else total - free,
            total_bytes=total, allocated_bytes=allocated, reserved_bytes=reserved, peak_bytes=peak,
            free_bytes=free, cuda_index=device))
    return tuple(found)


def _on_every_device(call: str) -> None:
    """torch.cuda.<call>(device) for every CUDA device; nothing without CUDA."""
    torch = _torch_with_cuda()
    if torch is not None:
        for device in cuda_devices():
            getattr(torch.cuda, call)(device)


def reset_peaks() -> None:
    """Start the allocator's peak over on every CUDA device (before a stage whose peak is wanted)."""
    _on_every_device("reset_peak_memory_stats")


def synchronize() -> None:
    """Wait for every CUDA device, so clocks and peaks read after it include the work queued before."""
    _on_every_device("synchronize")


def peaks_gb() -> dict[str, float]:
    """'cuda:N' → peak allocated GB since reset_peaks(), plus 'cpu' → current process RSS in GB."""
    peaks = {f"cuda:{g.index}": (g.peak_bytes or 0) / 1e9 for g in read_cuda(driver_free=False)}
    peaks["cpu"] = psutil.Process().memory_info().rss / 1e9
    return peaks
