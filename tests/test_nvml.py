"""NVML access: without a driver it reports why, once, and returns no GPUs instead of raising."""
import pytest

from core.telemetry import gpu_reader, nvml


def test_state_is_ok_or_a_reason() -> None:
    state = nvml.state()
    assert state == "ok" or state.startswith(("no ", "NVIDIA", "NVML"))
    assert nvml.state() == state  # initialised once


def test_gpus_match_state() -> None:
    found = gpu_reader.read_gpus()
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


def test_every_card_reads_as_one_record_with_free_memory_and_compute_capability() -> None:
    for gpu in gpu_reader.read_gpus():
        assert gpu.free_bytes is not None and 0 <= gpu.free_bytes <= gpu.total_bytes
        assert gpu.compute_capability is None or gpu.compute_capability >= (3, 0)


def test_torch_readings_wait_for_this_process_to_initialise_cuda() -> None:
    import torch

    if torch.cuda.is_initialized():
        pytest.skip("CUDA is already initialised in this process")
    assert gpu_reader.read_cuda() == () and gpu_reader.cuda_devices() == []
    assert set(gpu_reader.peaks_gb()) == {"cpu"} and gpu_reader.peaks_gb()["cpu"] > 0.01
    gpu_reader.reset_peaks()  # nothing to reset, nothing raised
    gpu_reader.synchronize()
    assert not torch.cuda.is_initialized()  # looking did not start CUDA
