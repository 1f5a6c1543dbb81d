"""The fast path for a decoder split over several devices (layers on two GPUs): a compiled step per device.

Why: the reference model split over two 24 GB cards answered through generate() (about 12-38 tok/s) because
the fast path's one compiled step assumed one device. A CUDA graph belongs to one device, so the step is cut
where the layers change device: each stage (consecutive layers on one device) is compiled on its own, with its
own CUDA graphs, and the hidden state crosses to the next device between two stages (a copy of hidden-size
values per row, nothing else). The layers' K/V caches live on their own devices; the embedding, the final norm
and the LM head run where the model keeps them, eagerly (a few kernels a token).
What each stage reads beside its weights and caches (RoPE tables, row ids, the decode attention's shared
inputs) is copied to its device once, at build. Prefill runs the same stages eagerly, the pass's index tensors
copied to each device (packed_prefill.PackedPlan.to).
Where: FastDecoder builds a StagedStep when its layers sit on more than one device (or when a test names
stage bounds, to run two stages on one CPU: the closest a machine without two GPUs gets). One device keeps
the single compiled step as before.
Not measured on two GPUs yet (bench/two_gpu.py, when a two-GPU machine is lent); tested on the CPU, where two
stages on one device give generate()'s ids.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from core.models.decode_attention import DecodeAttentionInputs
from core.models.fast_decode_thread import prepare_for_cuda_graphs

if TYPE_CHECKING:
    from core.models.fast_decode import FastDecoder
    from core.models.mrope import PromptRope
    from core.models.packed_prefill import PackedPlan


def stage_bounds(devices: Sequence[torch.device], forced: Sequence[int] = ()) -> list[tuple[int, int]]:
    """[first, last) layer ranges of consecutive layers on one device; `forced`: more cuts (layer indices)."""
    cuts = sorted({i for i in range(1, len(devices)) if devices[i] != devices[i - 1]} | set(forced))
    edges = [0, *cuts, len(devices)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if a < b]


@dataclass(frozen=True)
class Stage:
    """Layers [first, last) on `device`, with their copies of what a step reads there (FastDecoder's names)."""

    device: torch.device
    first: int
    last: int
    cos: torch.Tensor
    sin: torch.Tensor
    row_ids: torch.Tensor
    rope_delta: torch.Tensor
    shared: DecodeAttentionInputs

    def static_tensors(self) -> tuple[torch.Tensor, ...]:
        return self.cos, self.sin, self.row_ids, self.rope_delta, *self.shared.static_tensors()


class StagedStep:
    """FastDecoder's decode step over its stages (the module docstring); called as the step is."""

    def __init__(self, fast: FastDecoder, bounds: Sequence[tuple[int, int]],
                 options: Mapping[str, Any] | None) -> None:
        self.fast = fast
        self.stages: list[Stage] = []
        for first, last in bounds:
            device = fast.k_cache[first].device
            self.stages.append(Stage(device, first, last, fast.cos.to(device), fast.sin.to(device),
                                     fast.row_ids.to(device), fast.rope_delta.to(device, copy=True),
                                     DecodeAttentionInputs(fast.attention, fast.max_len, device, fast.rows, fast.n_kv)))
        self.runs: list[Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]] = []
        for stage in self.stages:
            run = self._stage_run(stage)
            if options is not None:  # compiled: one graph (and CUDA graphs) per stage, on its device
                for tensor in stage.static_tensors():
                    torch._dynamo.mark_static_address(tensor)
                run = torch.compile(run, options=dict(options), fullgraph=True, dynamic=False)
            self.runs.append(run)

    def prepare_devices(self) -> None:
        """On the decoder's thread: cuBLAS handles and CUDA-graph state on every stage's device."""
        for device in {stage.device for stage in self.stages}:
            prepare_for_cuda_graphs(device, self.fast.dtype)

    def _stage_run(self, stage: Stage) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]:
        fast = self.fast

        def run(x: torch.Tensor, pos: torch.Tensor, bucket: int) -> torch.Tensor:
            return fast._layers(x, pos, stage.shared.for_step(pos, bucket), bucket, first=stage.first,
                                last=stage.last, place=stage, norm=False)
        return run

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, penalty: torch.Tensor, bucket: int) -> torch.Tensor:
        fast = self.fast
        embed = fast.lm.embed_tokens
        x = embed(tokens.view(-1, 1).to(embed.weight.device))
        for stage, run in zip(self.stages, self.runs):
            x = run(x.to(stage.device), pos.to(stage.device), bucket)
        return fast._next_tokens(self._final_norm(x), penalty.view(-1, 1), decoding=True)

    def prefill(self, x: torch.Tensor, plan: PackedPlan, rope: PromptRope | None = None) -> torch.Tensor:
        """The prefill pass of `plan` through every stage, eager: normed hidden states on the head's device."""
        for stage in self.stages:
            here = plan.to(stage.device)
            x = self.fast._layers(x.to(stage.device), here.positions, None, plan=here, first=stage.first,
                                  last=stage.last, place=stage, norm=False, rope=rope)
        return self._final_norm(x)

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        fast = self.fast
        norm = fast.lm.norm
        return fast._norm(norm, x.to(norm.weight.device)).to(fast.device)
