"""One CPU thread policy for every process that generates: the CLI, the dashboard and the API server
(core/backends/runtime.py use_generation_threads, applied where every local backend is made), and the
process's attention kept off cuDNN there too."""
from __future__ import annotations

import os

import pytest
import torch

from core.backends import create_backend
from core.backends.runtime import generation_threads
from core.settings import load_settings


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3), (64, 63)])
def test_one_core_is_left_to_the_rest_of_the_process(cores: int, threads: int) -> None:
    assert generation_threads(cores) == threads


def test_a_local_backend_sets_the_policy_for_the_whole_process(torch_threads, monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(len(os.sched_getaffinity(0)) + 1)  # wider than the machine: must be narrowed
    create_backend(load_settings(device="cpu"))
    assert torch.get_num_threads() == generation_threads(len(os.sched_getaffinity(0)))


def test_threads_the_operator_set_are_kept(torch_threads, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    create_backend(load_settings(device="cpu"))
    assert torch.get_num_threads() == 2


def test_a_local_backend_keeps_attention_off_cudnn() -> None:
    """cuDNN builds an attention graph per prompt length (~0.37 s each on the H200): a local backend turns
    it off for the process (runtime.disable_cudnn_attention), leaving flash, memory-efficient and math."""
    torch.backends.cuda.enable_cudnn_sdp(True)
    create_backend(load_settings(device="cpu"))
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
