"""NVML access: without a driver it reports why, once, and returns no GPUs instead of raising."""
import pytest

from core.telemetry import nvml


def test_state_is_ok_or_a_reason() -> None:
    state = nvml.state()
    assert state == "ok" or state.startswith(("no ", "NVIDIA", "NVML"))
    assert nvml.state() == state  # initialised once


def test_gpus_match_state() -> None:
    found = nvml.gpus()
    if nvml.state() != "ok":
        assert found == ()
    for gpu in found:
        assert gpu.total_bytes >= gpu.used_bytes >= 0 and gpu.name


def test_query_turns_nvml_errors_into_none() -> None:
    import pynvml

    def unsupported() -> int:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    assert nvml.query(unsupported) is None
    with pytest.raises(ZeroDivisionError):  # only NVML's own errors are swallowed
        nvml.query(lambda: 1 / 0)
