"""The one GPU reader: every reading of GPU state goes through here and comes back as GpuSnapshot records.

- NVML, through core.telemetry.nvml.query (a field a card cannot report is None, never an exception): every
  card as nvidia-smi numbers it — memory used/free/total, this process's share, utilisation, temperature,
  power, compute capability, UUID. Once this process has initialised CUDA, torch's allocator figures for the
  same card join it, matched by UUID so CUDA_VISIBLE_DEVICES renumbering does not mislabel them.
- Which devices CUDA shows this process, in CUDA's order (`cuda_index`, read_visible): CUDA_VISIBLE_DEVICES
  read as CUDA reads it (indices, UUIDs or their prefixes, MIG devices; core/telemetry/cuda_visible.py), so
  the pre-flight check plans on the cards the model will really load on, before CUDA starts.
- torch's allocator alone (read_cuda), numbered as CUDA numbers devices: what admission and load progress
  need, with the driver's free memory as CUDA reports it. Nothing is read before this process has
  initialised CUDA, and torch is never imported just to look: the CLI must stay quick.
- The allocator's peaks around one answer (reset_peaks, peaks_gb, synchronize).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from types import ModuleType

import psutil

from core.telemetry import nvml
from core.telemetry.cuda_visible import NvmlDevice, cuda_order
from core.telemetry.snapshots import GpuSnapshot


@dataclass(frozen=True)
class _Known:
    """What never changes about one NVML device: its handle, name, compute capability and identity."""

    device: NvmlDevice
    handle: object
    name: str
    capability: tuple[int, int] | None


class GpuReader:
    """Reads every NVML card now; keeps what never changes (handles, names, UUIDs, MIG devices, the torch map)."""

    def __init__(self) -> None:
        self._known: list[_Known] | None = None
        self._torch_devices: dict[str, int] | None = None  # NVML UUID → torch device index

    def read(self) -> tuple[GpuSnapshot, ...]:
        """Every whole card NVML sees, now, numbered as nvidia-smi numbers them (empty when nvml.state() is
        not 'ok'); `cuda_index` says how CUDA numbers each in this process."""
        known = self._known_devices()
        visible = {d.uuid: n for n, d in enumerate(cuda_order(os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                               [k.device for k in known]))}
        return tuple(self._read(k, visible.get(k.device.uuid)) for k in known if not k.device.is_mig)

    def read_visible(self) -> tuple[GpuSnapshot, ...]:
        """The devices CUDA will show this process (CUDA_VISIBLE_DEVICES applied: indices, UUIDs, MIG), in
        CUDA's order, `index` being CUDA's number: what the pre-flight check plans on, before CUDA starts."""
        known = {k.device: k for k in self._known_devices()}
        order = cuda_order(os.environ.get("CUDA_VISIBLE_DEVICES"), list(known))
        return tuple(replace(self._read(known[device], cuda), index=cuda) for cuda, device in enumerate(order))

    def _known_devices(self) -> list[_Known]:
        if self._known is None:
            self._known = []
            if nvml.state() == "ok":
                import pynvml

                for index in range(nvml.query(pynvml.nvmlDeviceGetCount) or 0):
                    handle = nvml.query(pynvml.nvmlDeviceGetHandleByIndex, index)
                    if handle is not None:
                        self._known.extend(_describe(index, handle))
        return self._known

    def _read(self, known: _Known, cuda_index: int | None) -> GpuSnapshot:
        import pynvml

        handle = known.handle
        mem = nvml.query(pynvml.nvmlDeviceGetMemoryInfo, handle)
        util = nvml.query(pynvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = nvml.query(pynvml.nvmlDeviceGetPowerUsage, handle)
        device = self._torch_device(known.device.uuid)
        allocated, reserved, peak = _allocator(device) if device is not None else (None, None, None)
        return GpuSnapshot(
            index=known.device.index, name=known.name,
            used_bytes=int(mem.used) if mem is not None else None,
            total_bytes=int(mem.total) if mem is not None else None,
            process_bytes=_process_bytes(handle, reserved),
            utilization_pct=int(util.gpu) if util is not None else None,
            temperature_c=nvml.query(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
            power_w=power_mw / 1000 if power_mw is not None else None,
            allocated_bytes=allocated, reserved_bytes=reserved, peak_bytes=peak,
            free_bytes=int(mem.free) if mem is not None else None,
            compute_capability=known.capability, cuda_index=device if device is not None else cuda_index,
            uuid=known.device.uuid,
        )

    def _torch_device(self, card_uuid: str) -> int | None:
        """torch's number for this device once CUDA is initialised: what CUDA itself decided, by UUID."""
        torch = _torch_with_cuda()
        if torch is None:
            return None
        if self._torch_devices is None:
            self._torch_devices = {}
            for device in range(torch.cuda.device_count()):
                found = getattr(torch.cuda.get_device_properties(device), "uuid", None)
                if found is not None:  # torch gives the bare UUID; NVML prefixes GPU- or MIG-
                    self._torch_devices[f"GPU-{found}"] = self._torch_devices[f"MIG-{found}"] = device
        return self._torch_devices.get(card_uuid)


def _describe(index: int, handle: object) -> list[_Known]:
    """One card, and its MIG devices when it is in MIG mode (each a device CUDA_VISIBLE_DEVICES can name)."""
    import pynvml

    card_uuid = _text(nvml.query(pynvml.nvmlDeviceGetUUID, handle) or "")
    capability = nvml.query(pynvml.nvmlDeviceGetCudaComputeCapability, handle)
    mode = nvml.query(pynvml.nvmlDeviceGetMigMode, handle)  # (current, pending); None: no MIG on this card
    mig_enabled = bool(mode and mode[0])
    found = [_Known(NvmlDevice(index, card_uuid, mig_enabled=mig_enabled), handle,
                    _text(nvml.query(pynvml.nvmlDeviceGetName, handle) or f"GPU{index}"), capability)]
    slots = (nvml.query(pynvml.nvmlDeviceGetMaxMigDeviceCount, handle) or 0) if mig_enabled else 0
    for mig_index in range(slots):
        mig = nvml.query(pynvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, mig_index)
        if mig is None:  # MIG device numbers need not be contiguous
            continue
        gi, ci = (nvml.query(pynvml.nvmlDeviceGetGpuInstanceId, mig), nvml.query(pynvml.nvmlDeviceGetComputeInstanceId, mig))
        device = NvmlDevice(index, _text(nvml.query(pynvml.nvmlDeviceGetUUID, mig) or ""), mig_index=mig_index,
                            parent_uuid=card_uuid, instance_ids=(gi, ci) if gi is not None and ci is not None else None)
        found.append(_Known(device, mig, _text(nvml.query(pynvml.nvmlDeviceGetName, mig) or f"GPU{index} MIG"), capability))
    return found


def read_gpus() -> tuple[GpuSnapshot, ...]:
    """One reading of every GPU NVML sees (empty without a GPU reading; nvml.state() says why)."""
    return GpuReader().read()


def read_visible() -> tuple[GpuSnapshot, ...]:
    """One reading of the devices CUDA will show this process, numbered as CUDA numbers them."""
    return GpuReader().read_visible()


def visible_to_cuda(gpus: tuple[GpuSnapshot, ...]) -> tuple[GpuSnapshot, ...]:
    """Figures given for whole cards (NVML numbering, UUIDs where known) as CUDA will number them under
    CUDA_VISIBLE_DEVICES: what-if plans and tests, where no MIG device is described."""
    by_device = {NvmlDevice(g.index, g.uuid or f"GPU-unknown-{g.index}"): g for g in gpus}
    order = cuda_order(os.environ.get("CUDA_VISIBLE_DEVICES"), list(by_device))
    return tuple(replace(by_device[device], index=cuda, cuda_index=cuda) for cuda, device in enumerate(order))


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
