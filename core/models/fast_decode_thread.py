"""The fast decoder's one thread (core/models/fast_decode.py), and what a thread needs before it records CUDA graphs.

torch keeps CUDA graphs (cudagraph trees) per thread. Two things must be true of a thread before a graph is
recorded on it, and neither is by itself on every torch the project meets:
- cudagraph trees' per-thread state exists: torch 2.11 creates it only on the thread that first imported
  `torch._inductor.cudagraph_trees` and asserts on any other (seen on the H200: the first model compiled fine,
  every later decoder thread, and the main thread after it, failed with an AssertionError); torch 2.12+
  creates it on demand. It is created here the way torch does at import.
- the thread's cuBLAS and cuBLASLt handles exist: creating one during a capture fails
  (CUBLAS_STATUS_NOT_INITIALIZED, then cudaErrorStreamCaptureInvalidated), so one small matmul runs first.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import torch
import torch.nn.functional as F

T = TypeVar("T")


def prepare_for_cuda_graphs(device: torch.device, dtype: torch.dtype) -> None:
    """Make the calling thread ready to record and replay CUDA graphs on `device` (no-op off CUDA)."""
    if device.type != "cuda":
        return
    from torch._inductor import cudagraph_trees

    local = cudagraph_trees.local
    if not hasattr(local, "tree_manager_containers"):
        local.tree_manager_containers = {}
        local.tree_manager_locks = defaultdict(threading.Lock)
        # Where torch looks them up (its autograd threads inherit these): the same objects as on `local`.
        torch._C._stash_obj_in_tls("tree_manager_containers", local.tree_manager_containers)
        torch._C._stash_obj_in_tls("tree_manager_locks", local.tree_manager_locks)
    with torch.no_grad():
        probe = torch.ones(16, 16, device=device, dtype=dtype)
        F.linear(probe, probe, probe[0])  # cuBLASLt (bias epilogue) and cuBLAS handles of this thread
        torch.mm(probe, probe)
        torch.mm(probe.float(), probe.float())
    torch.cuda.synchronize(device)


def forget_cuda_graphs() -> None:
    """Free the calling thread's CUDA graphs and their private memory pool (they hold decode-step memory)."""
    from torch._inductor import cudagraph_trees

    if hasattr(cudagraph_trees.local, "tree_manager_containers"):  # else this thread never recorded one
        cudagraph_trees.reset_cudagraph_trees()


class DecoderThread:
    """One worker thread; `run` executes on it (directly when already on it) and re-raises its exception."""

    def __init__(self, device: torch.device, dtype: torch.dtype) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loupe-fast-decode")
        self.ident = self._pool.submit(threading.get_ident).result()
        self.run(prepare_for_cuda_graphs, device, dtype)

    def run(self, fn: Callable[..., T], *args: object) -> T:
        if threading.get_ident() == self.ident:
            return fn(*args)
        return self._pool.submit(fn, *args).result()

    def submit(self, fn: Callable[[], object]) -> Future[object]:
        """Queue fn on the thread without waiting (the continuous batcher's loop)."""
        return self._pool.submit(fn)

    def close(self, compiled_on_cuda: bool) -> None:
        """Free the thread's CUDA graphs on the thread itself, then end it."""
        if compiled_on_cuda:
            self.run(forget_cuda_graphs)
        self._pool.shutdown(wait=True)
