"""Several prompts decoded together on the fast path: one compiled step advances every row by one token.

Why: a decode step is bound by reading the weights, so 4 rows cost about what 1 row costs. Compare (4
templates on one image) answers all its cells in about the time of one answer instead of four.
Decisions:
- The rows are prefilled in one pass (packed_prefill.py), unpadded, each into its own row of the decoder's
  static cache and attending to its own positions only, so each row's greedy answer is token for token the
  answer it gets alone; a row whose prompt begins as an earlier row's (Compare: one image, several templates)
  copies that prefix's cache and computes only the rest (shared_prefix.py).
- The step always runs all of the decoder's rows (the row count it was compiled for at load time); rows beyond
  the prompts, and rows that already ended, are carried along and their tokens ignored: compiling a step
  per row count would put compilation into an analyst's question.
- Each row keeps its own position, repetition-penalty history and end time (the stage clock wants each
  row's own decode time, as batched generate() reports it).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from core.models.fast_decode import FastDecoder
from core.models.packed_prefill import prefill_prompts
from core.models.token_readback import TokenReadback


@dataclass(frozen=True)
class RowAnswer:
    """One row's new token ids and when (perf_counter) its last one was read."""

    new_ids: tuple[int, ...]
    ended_at: float


def generate_rows(fast: FastDecoder, prompts: Sequence[dict[str, Any]], max_new_tokens: int,
                  repetition_penalty: float, eos_ids: set[int],
                  should_stop: Callable[[], bool] | None = None,
                  on_prefilled: Callable[[], object] | None = None) -> list[RowAnswer]:
    """Greedy answers for up to `fast.rows` prompts (each a prefill's inputs), on the decoder's own thread;
    `on_prefilled` is called once every row has its first token (the stage clock's first-token mark)."""
    if not 0 < len(prompts) <= fast.rows:
        raise ValueError(f"{len(prompts)} prompts for a decoder of {fast.rows} rows")
    return fast.on_own_thread(_generate_rows, fast, list(prompts), max_new_tokens, repetition_penalty, eos_ids,
                              should_stop, on_prefilled)


@torch.no_grad()
def _generate_rows(fast: FastDecoder, prompts: list[dict[str, Any]], max_new_tokens: int,
                   repetition_penalty: float, eos_ids: set[int],
                   should_stop: Callable[[], bool] | None,
                   on_prefilled: Callable[[], object] | None) -> list[RowAnswer]:
    count = len(prompts)
    stepped = 1 if count == 1 else fast.rows
    penalty = torch.full((stepped, 1), repetition_penalty, device=fast.device, dtype=torch.float32)
    prefilled = prefill_prompts(fast, list(enumerate(prompts)), (), penalty)
    lengths = list(prefilled.lengths)
    if on_prefilled is not None:
        on_prefilled()
    padding = torch.zeros(stepped - count, dtype=torch.long, device=fast.device)
    tokens = torch.cat([prefilled.firsts, padding])
    budgets = [min(max_new_tokens, fast.max_len - length) for length in lengths]
    produced: list[list[int]] = [[] for _ in prompts]
    ended: list[float | None] = [None] * count
    # On the device: a host tensor copied into the step's input would make the host wait for the GPU every step.
    start = torch.tensor(lengths + [0] * (stepped - count), dtype=torch.long, device=fast.device)
    pos = torch.zeros(stepped, dtype=torch.long, device=fast.device)
    readback = TokenReadback(fast.device, stepped, fast.read_ahead)

    def launch(tokens: torch.Tensor, step: int) -> torch.Tensor:
        # A row that ended keeps stepping (its tokens ignored) but never past its cache's last position.
        torch.clamp(start + step, max=fast.max_len - 1, out=pos)
        return fast.replay_step(tokens, pos, penalty, min(max(lengths) + step, fast.max_len - 1))

    step = 0
    while True:
        pending = readback.start(tokens[:count])
        # No step is launched ahead when every row ends at this read by its budget (a wasted step otherwise).
        more = any(e is None and len(ids) + 1 < budget for e, ids, budget in zip(ended, produced, budgets))
        if readback.ahead and more:  # the next step runs while these tokens are read (token_readback.py)
            tokens = launch(tokens, step)
        now_values = TokenReadback.read(pending)  # the one wait per step, as for a single answer
        now = time.perf_counter()
        for row, value in enumerate(now_values):
            if ended[row] is None:
                produced[row].append(value)
                if value in eos_ids or len(produced[row]) >= budgets[row]:
                    ended[row] = now
        if all(e is not None for e in ended) or (should_stop is not None and should_stop()):
            break
        if not readback.ahead:
            tokens = launch(tokens, step)
        step += 1
    stopped_at = time.perf_counter()
    return [RowAnswer(tuple(ids), end if end is not None else stopped_at) for ids, end in zip(produced, ended)]
