"""bench/oom_recovery.py as tests: on a GPU (device run) the allocator must come back exactly after an
out-of-memory error and over 50 requests; on CPU (CI) the same script runs shortened, so it cannot rot."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

_SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "oom_recovery.py"


def _bench():
    spec = importlib.util.spec_from_file_location("oom_recovery_bench", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check(result: dict) -> None:
    assert (result["burst"]["answered"], result["burst"]["errors"]) == (3, 0)
    oom = result["oom"]
    assert oom["error_type"] == "OutOfMemoryError" and "ran out of memory" in oom["message"]
    assert oom["held_activation_freed"] and oom["returned_to_baseline"]
    assert oom["next_request_ok"] and oom["model_still_loaded"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_oom_recovery_on_gpu() -> None:
    result = _bench().run("cuda", sequential=50)
    _check(result)
    assert "GPU ran out of memory" in result["oom"]["message"]
    assert abs(result["sequential"]["growth_bytes"]) <= 2**20, result["sequential"]


def test_oom_recovery_script_runs_on_cpu() -> None:
    result = _bench().run("cpu", sequential=3)
    _check(result)
    assert "machine ran out of memory" in result["oom"]["message"]
