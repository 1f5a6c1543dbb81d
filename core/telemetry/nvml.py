"""Every NVML call goes through `query()`, which turns "not supported" (and friends) into None.

NVML is initialised once per process, lazily, and shut down at exit. When the library or the driver is
missing, `state()` says why once and every reading is simply absent: callers never see an exception.
The cards themselves are read by core/telemetry/gpu_reader.py, the one GPU reader.
"""
from __future__ import annotations

import atexit
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_state: str | None = None  # "ok", or why there is no GPU reading


def _initialise() -> str:
    try:
        import pynvml
    except ImportError:
        return "no NVML library (install nvidia-ml-py)"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        return "no NVIDIA driver (libnvidia-ml not found)"
    except pynvml.NVMLError_DriverNotLoaded:
        return "NVIDIA driver not loaded"
    except pynvml.NVMLError as exc:
        return f"NVML unavailable ({exc})"
    atexit.register(_shutdown)
    count = query(pynvml.nvmlDeviceGetCount)
    return "ok" if count else "no GPU visible"


def _shutdown() -> None:
    try:
        import pynvml

        pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - at exit, nothing useful can be done
        pass


def state() -> str:
    """'ok' when GPUs can be read, else a short reason ('no NVIDIA driver ...', 'no GPU visible')."""
    global _state
    with _lock:
        if _state is None:
            _state = _initialise()
        return _state


def query(func: Callable[..., T], *args: Any) -> T | None:
    """Call one NVML function; None if this card or driver cannot answer it (not supported, lost, ...)."""
    import pynvml

    try:
        return func(*args)
    except pynvml.NVMLError:
        return None
