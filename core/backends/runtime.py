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


def generation_threads(usable_cores: int) -> int:
    """Torch's CPU thread team for a process that generates: one narrower than the cores it may use, at least 1.

    One policy for every such process, the CLI, the dashboard and the API server alike (issue #17 item 1), so
    that `python -m core ask` measures what a page gets and the two can be compared:
    - a server has more to do than generate: Streamlit's event loop, the page's script thread, the scheduler's
      worker wake up while tokens come, and an OpenMP team as wide as the machine stalls at every barrier
      when one of its threads is preempted by them (or by anything else on the machine). Measured on 2 busy
      cores with the demo model: 11 tok/s in the page with 2 threads, 275 tok/s with 1;
    - the CLI loses nothing by it on the demo model: on 2 cores 1 and 2 threads decode alike (368 and 360
      tok/s, 3.05 ms of CPU a token, medians of 15 alternations), its matrices being below torch's grain for
      parallel work. A CPU model large enough to use every core gives up one core's share, the price of a
      CLI figure that predicts the dashboard's.
    """
    return max(1, usable_cores - 1)


def use_generation_threads() -> int:
    """Apply generation_threads() to this process's torch before a local model loads; returns the team's size.
    OMP_NUM_THREADS, when set, is the operator's choice for this process and is kept."""
    import os

    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(generation_threads(len(os.sched_getaffinity(0))))
    return torch.get_num_threads()


def disable_cudnn_attention() -> None:
    """Keep torch's SDPA off cuDNN's attention in this process (flash, memory-efficient and math remain).

    cuDNN builds an execution graph for every new shape of its attention, and a prompt's shape is its length:
    every question of a new length paid for a build inside its prefill. On the H200 (7B shape,
    bench/results/concurrent_decode_cuda.json) 8 questions about one image, each of another length, spent
    2.94 s of the continuous batcher's 4.23 s in admitting them, about 0.37 s each for prefills of a few
    tokens after a shared prefix (sglang's cuDNN backend work measured about 400 ms a build). Flash and
    memory-efficient attention have no per-shape step. Process-wide, as torch's flag is: every prefill (the
    fast path's, generate()'s, XComposer's own forward) gains alike."""
    import torch

    torch.backends.cuda.enable_cudnn_sdp(False)
