"""Where and how a model runs: the device, the dtype and the attention implementation it gets, and the
loaded model as the code that answers with it sees it (LoadedModel)."""
from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import ModelError
from core.messages import MessageText

if TYPE_CHECKING:
    from transformers import ProcessorMixin

    from core.models.fast_decode_support import GenerativeModel

FAST_DECODE_NOTE = MessageText("model.fast_decode", "fast decode: {status}")  # the model card's line; status as found

@dataclass(frozen=True)
class Runtime:
    """Where and how the model runs: device, dtype and attention implementation."""

    device: str
    dtype: str
    attn_implementation: str
    note: str = ""


def choose_runtime(device_setting: str = "auto") -> Runtime:
    """bf16 on a GPU that has it (fp16 otherwise), fp32 on CPU; flash-attn 2 only when importable on CUDA."""
    import torch

    use_cuda = device_setting != "cpu" and torch.cuda.is_available()
    if device_setting == "cuda" and not use_cuda:
        raise ModelError("The settings ask for a GPU (device = 'cuda') but no CUDA GPU is visible.")
    if not use_cuda:
        return Runtime("cpu", "float32", "sdpa")
    major, _minor = torch.cuda.get_device_capability(0)
    dtype, note = ("bfloat16", "") if major >= 8 else ("float16", "bf16 needs compute capability 8.0+: using fp16")
    attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    return Runtime("cuda", dtype, attn, note)


@dataclass(frozen=True)
class LoadedModel:
    """A loaded transformers model with what answering needs: its name, processor, runtime and the lock that
    lets one generate() at a time run on it (shared by single answers and batched ones)."""

    name: str
    model: GenerativeModel
    processor: ProcessorMixin
    runtime: Runtime
    lock: threading.Lock


def give_back_gpu_memory() -> None:
    """Return to the driver every GPU byte torch holds that no live tensor uses (after a model is dropped).

    gc first: a dropped model can sit in reference cycles. Then cuBLAS's workspaces (one per thread and stream
    that ran a matmul, 32 MiB each on Hopper): they are allocated from torch's cache after the weights, in the
    holes the fused weights left, and a live block pins its whole segment, so one workspace kept the 16 GB
    segment transformers had reserved for the weights (seen on the H200: 16.1 GB still reserved, 35 MB
    allocated). Only then can empty_cache() release every segment. Call it with no generation running.
    """
    import gc

    import torch

    gc.collect()
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return
    torch.cuda.synchronize()
    clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear_workspaces is not None:
        clear_workspaces()
    torch.cuda.empty_cache()


def leave_a_core_for_the_server() -> int:
    """Make torch's CPU thread team one narrower than the cores this process may use (at least 1); returns it.

    For a process that serves pages while it generates (the dashboard): Streamlit's event loop, the page's
    script thread and the scheduler's worker wake up while tokens are generated, and on a CPU model an OpenMP
    team as wide as the machine stalls at every barrier when one of its threads is preempted by them. Measured
    on 2 busy cores with the demo model: 11 tok/s in the page with 2 threads, 275 tok/s with 1 (the CLI: 334).
    """
    import os

    import torch

    threads = max(1, len(os.sched_getaffinity(0)) - 1)
    torch.set_num_threads(threads)
    return threads
