"""A fast greedy decode path for Llama-shaped decoders, on the loaded model's own weights (in gpt-fast's spirit;
plain `generate()` is bound by Python overhead, about 6% of the memory-bandwidth limit on a 7B model):
- QKV and gate/up fused into one matrix each; the model's weights become views into them (no second copy);
- one static KV cache of `rows` rows (several prompts, each at its own position: fast_decode_rows.py and the
  continuous batcher, fast_decode_batcher.py), allocated once and reused by every request; decode attention
  as decode_attention.py says; every step graph (per bucket and row count) compiled while loading;
- the one-row step's projections through Loupe's own Triton GEMV beside the split-KV kernel (decode_gemv.py,
  row_gemv.py: 213.9 -> 231.3 tok/s on the H200, 7B shape);
- the step compiled with CUDA graphs (`reduce-overhead`), greedy argmax and the repetition penalty on the GPU;
- the next step launched before the host reads a token (token_readback.py): the GPU never waits for the host
  (176.9 → 208.7 tok/s on the H200, 7B shape);
- all of it on ONE thread the decoder owns: torch keeps CUDA graphs per thread, so graphs recorded while
  loading would be recorded again (a new memory pool, a warm-up and a capture) in every request's thread;
- the prefill (vision tower + merged embeddings) taken from the real model: a pre-hook on its language model
  captures `inputs_embeds`, so every VLM whose decoder is Llama-shaped (LLaVA, ...) gets it unchanged; it
  captures the position ids too, which Qwen2-VL's M-RoPE decoders rotate by (mrope.py).
Greedy answers; a decoder split over GPUs gets a compiled step per device (decode_stages.py); sampling and
beams use `generate()` (fast_decode_support.py).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import torch
import torch.nn.functional as F

from core.models.decode_attention import DecodeAttention, DecodeAttentionInputs, attend
from core.models.decode_gemv import PRODUCT_FUSED, PRODUCT_GEMV, PRODUCT_ROWS_GEMV, GemvKernel, Projection, project
from core.models.decode_stages import StagedStep, stage_bounds
from core.models.fast_decode_support import capture_prompt, fuse_linears, language_model, uses_mrope
from core.models.fast_decode_thread import DecoderThread, prepare_for_cuda_graphs
from core.models.mrope import PromptRope, prompt_rope
from core.models.packed_prefill import PackedPlan, attend_prompts
from core.models.shared_prefix import media_token_ids

if TYPE_CHECKING:
    from transformers.generation.streamers import BaseStreamer

T = TypeVar("T")

# Inductor's options for the decode step, CUDA graphs always on ("reduce-overhead"); measured against the
# alternatives on an H200 by bench/decode_compile_variants.py (bench/results/decode_compile_variants_cuda.json).
STEP_COMPILE_OPTIONS: dict[str, str | int | bool] = {}


class _Norm(Protocol):
    """An RMSNorm layer as the decoder reads it (its epsilon is read by name, whichever the model uses)."""

    weight: torch.Tensor


class FastDecoder:
    """Greedy decoding with a static cache of `max_len` positions per row, `rows` rows (a batch of prompts)."""

    def __init__(self, model: Any, max_len: int, compile: bool | None = None, buckets: tuple[int, ...] = (2048,),
                 rows: int = 1, attention: DecodeAttention | None = None,
                 compile_options: Mapping[str, str | int | bool] | None = None,
                 gemv: Mapping[Projection, GemvKernel] | None = None,
                 rows_gemv: Mapping[Projection, GemvKernel] | None = None,
                 flex_options: Mapping[str, int | bool] | None = None, stage_cuts: Sequence[int] = (),
                 fused: bool | None = None) -> None:
        """`stage_cuts`: layer indices where a new stage begins besides where the layers change device
        (decode_stages.py; tests run two stages on one CPU with it)."""
        self.model = model
        self.lm = language_model(model)
        cfg = self.lm.config
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.max_len = max_len
        self.rows = rows
        self.device = model.lm_head.weight.device
        compiled_on_cuda = self.device.type == "cuda" and compile is not False
        self.attention = (attention or DecodeAttention.AUTO).resolved(compiled_on_cuda)
        # The one-row step's GEMV kernel per projection (decode_gemv.py; cuBLAS where none is named). By default
        # the measured choice, where Loupe's Triton kernels run: with the split-KV kernel, which the fallback to
        # FlexAttention (fast_decode_support.build_and_warm) drops, and the GEMVs with it. Given explicitly they
        # apply anywhere (the CPU tests check the sums, Triton's under its interpreter).
        own_kernels = compiled_on_cuda and self.attention is DecodeAttention.SPLIT
        self.gemv = dict(gemv) if gemv is not None else (dict(PRODUCT_GEMV) if own_kernels else {})
        # The same for the step of several rows (rows_gemv.py), chosen apart: one GEMM serves every row there.
        self.rows_gemv = dict(rows_gemv) if rows_gemv is not None else (
            dict(PRODUCT_ROWS_GEMV) if own_kernels else {})
        # The one-row step with the norms, residual adds and SiLU·mul folded into its GEMVs (fused_gemv.py).
        self.fused = (PRODUCT_FUSED and own_kernels) if fused is None else fused
        if self.fused:  # Triton is imported only where its kernels run
            from core.models.fused_gemv import fused_gemv
            self._fused_gemv = fused_gemv
        self.flex_options = dict(flex_options or {})  # FlexAttention's kernel options (measured by the variants bench)
        self.dtype = model.lm_head.weight.dtype
        self.layers = []
        for layer in self.lm.layers:
            attn, mlp = layer.self_attn, layer.mlp
            wqkv, bqkv = fuse_linears([attn.q_proj, attn.k_proj, attn.v_proj])
            wgu, _ = fuse_linears([mlp.gate_proj, mlp.up_proj])
            self.layers.append((layer.input_layernorm, wqkv, bqkv, attn.o_proj, layer.post_attention_layernorm,
                                wgu, mlp.down_proj))
        # One K and one V tensor per layer, never views of one big tensor: compiled, a write into a view
        # (cache[i].index_copy_) is not done in place but as a copy of the layer's whole cache and a copy
        # back, every token (seen in the post-grad graph); a write into a whole tensor stays in place.
        shape = (rows, self.n_kv, max_len, self.head_dim)
        # Each layer's cache on its layer's device (a split model's layers sit on several: decode_stages.py).
        devices = [layer[1].device for layer in self.layers]
        self.k_cache = [torch.zeros(shape, device=device, dtype=self.dtype) for device in devices]
        self.v_cache = [torch.zeros(shape, device=device, dtype=self.dtype) for device in devices]
        self.shared = DecodeAttentionInputs(self.attention, max_len, self.device, rows, self.n_kv)
        positions = self.shared.positions
        # M-RoPE (mrope.py): each row's generated tokens read the table at their position + the row's delta.
        self.mrope = uses_mrope(cfg)
        self.rope_delta = torch.zeros(rows, dtype=torch.long, device=self.device)
        table = torch.arange(2 * max_len, device=self.device) if self.mrope else positions
        rotary_device = next(iter(self.lm.rotary_emb.buffers()), positions).device
        probe = torch.zeros(1, 1, device=rotary_device, dtype=self.dtype)
        ids = table[None].to(rotary_device)
        # M-RoPE's rotary embedding takes [3, batch, T] (a text token's three positions, equal), in every version.
        cos, sin = self.lm.rotary_emb(probe, ids[None].expand(3, 1, -1) if self.mrope else ids)
        self.cos = cos[0].to(self.device, self.dtype)  # [max_len, head_dim]; [2 * max_len, head_dim] with M-RoPE
        self.sin = sin[0].to(self.device, self.dtype)
        self.positions = positions
        self.row_ids = torch.arange(rows, device=self.device)
        # Positions go in through their own small buffer, never as a view of `positions`: a view of a
        # static-address tensor with a new offset each step would make CUDA graphs re-record every token.
        self._pos = torch.zeros(rows, dtype=torch.long, device=self.device)
        vocab = cfg.vocab_size if hasattr(cfg, "vocab_size") else model.lm_head.weight.shape[0]
        self.seen = torch.zeros(rows, vocab, device=self.device, dtype=torch.bool)
        every = tuple(sorted({b for b in buckets if b < max_len} | {max_len}))
        self.buckets = (max_len,) if self.attention.reads_filled_only else every
        use_compile = self.device.type == "cuda" if compile is None else compile
        self.compiled = use_compile
        if use_compile:
            # CUDA graphs need these at fixed addresses (as HF's StaticCache does); dynamic=False gives each
            # bucket (and each row count) its own static graph instead of one dynamic-shape graph.
            fused_weights = [t for layer in self.layers for t in (layer[1], layer[2], layer[5]) if t is not None]
            for tensor in (*self.k_cache, *self.v_cache, self.seen, self.cos, self.sin, self.row_ids, self.rope_delta,
                           *self.shared.static_tensors(), *fused_weights):
                torch._dynamo.mark_static_address(tensor)  # else CUDA graphs copy them in on every step
            chosen = STEP_COMPILE_OPTIONS if compile_options is None else compile_options
            options: dict[str, str | int | bool | Callable[..., Any]] = {"triton.cudagraphs": True, **chosen}
            self._step = torch.compile(self._decode_step, options=options, fullgraph=True, dynamic=False)
            prepare_for_cuda_graphs(self.device, self.dtype)  # for callers that compile on this thread (tests)
        else:
            self._step = self._decode_step
        bounds = stage_bounds(devices, stage_cuts)
        self.staged = StagedStep(self, bounds, options if use_compile else None) if len(bounds) > 1 else None
        if self.staged is not None:
            self._step = self.staged
        self._prefill_hidden: torch.Tensor | None = None
        # Prompts that begin alike copy each other's cached prefix (shared_prefix.py); a subclass whose prefill
        # is not the text embeddings' (XComposer's Partial-LoRA) turns it off.
        self.media_ids = media_token_ids(getattr(model, "config", None))
        self.shares_prefixes = not self.mrope
        # Several prompts in one prefill pass (packed_prefill.py); not XComposer's, not M-RoPE's (mrope.py).
        self.packs_prefills = not self.mrope
        self.read_ahead = self.device.type == "cuda"  # launch a step before reading the last (token_readback.py)
        self._thread = DecoderThread(self.device, self.dtype)
        if self.staged is not None and use_compile:
            self.on_own_thread(self.staged.prepare_devices)

    def on_own_thread(self, fn: Callable[..., T], *args: object) -> T:
        """Run fn on the decoder's one thread (directly when already on it) and wait; its exception is raised here."""
        return self._thread.run(fn, *args)

    def submit_to_own_thread(self, fn: Callable[[], object]) -> None:
        """Queue fn on the decoder's thread and return at once (calls made with on_own_thread wait behind it)."""
        self._thread.submit(fn)

    def close(self) -> None:
        """Drop what compiling made and every tensor the decoder owns, then end the thread; unusable after.
        The CUDA graphs (their private memory pool) live on the decoder's thread; dynamo's code cache keeps
        the model's tensors reachable until reset. One model is loaded per process, so the reset loses nothing
        another needs. The fused weights stay alive as long as the model's views into them do."""
        self._thread.close(self.compiled and self.device.type == "cuda")
        if self.compiled:
            torch._dynamo.reset()
        self._step = self._decode_step
        self.staged = None
        self.k_cache, self.v_cache, self.layers = [], [], []
        self._prefill_hidden = None

    # -- the decoder --------------------------------------------------------------------------------
    @staticmethod
    def _eps(module: _Norm) -> float:
        return float(getattr(module, "variance_epsilon", 0.0) or getattr(module, "eps", 1e-6))

    @classmethod
    def _norm(cls, module: _Norm, x: torch.Tensor) -> torch.Tensor:
        eps = cls._eps(module)
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x.float() * torch.rsqrt(variance + eps)).to(x.dtype) * module.weight

    @staticmethod
    def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _layers(self, x: torch.Tensor, pos: torch.Tensor, shared: object | None, bucket: int = 0,
                plan: PackedPlan | None = None, first: int = 0, last: int | None = None, place: Any = None,
                norm: bool = True, rope: PromptRope | None = None) -> torch.Tensor:
        """Prefill (`shared` None): x [1, T, hidden], the computed tokens of `plan`'s prompts at positions `pos`
        [T] (packed_prefill.py). Decode: x [rows, 1, hidden], one new token per row at `pos` [rows]. Writes each
        token's K/V into its row's cache. Layers [first, last) only, reading the RoPE tables and row ids of
        `place` (a decode_stages.Stage on their device; else the decoder's own), then the final norm if `norm`.
        `rope`: a prefill's own rotation (M-RoPE, mrope.py) instead of the table's rows at `pos`."""
        place = self if place is None else place
        rows, t = x.shape[0], x.shape[1]
        decoding = shared is not None
        view = (rows, 1, 1, self.head_dim) if decoding else (1, 1, t, self.head_dim)
        if rope is not None:
            cos, sin = rope.cos.to(x.device).view(view), rope.sin.to(x.device).view(view)
        else:
            at = pos + place.rope_delta[:rows] if decoding and self.mrope else pos
            cos, sin = place.cos[at].view(view), place.sin[at].view(view)
        q_size, kv_size = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        kernels = self._kernels(rows) if decoding else {}

        def kernel(projection: Projection) -> GemvKernel:
            return kernels.get(projection, GemvKernel.CUBLAS)
        fused = decoding and rows == 1 and self.fused
        for i, (norm1, wqkv, bqkv, o_proj, norm2, wgu, down) in enumerate(self.layers[first:last], start=first):
            if fused:  # the norm in the GEMV's prologue (fused_gemv.py)
                qkv = self._fused_gemv(x, wqkv, bqkv, norm_weight=norm1.weight, eps=self._eps(norm1))
            else:
                qkv = project(self._norm(norm1, x), wqkv, bqkv, kernel(Projection.QKV))
            q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
            q = self._rope(q.view(rows, t, self.n_heads, self.head_dim).transpose(1, 2), cos, sin)
            k = self._rope(k.view(rows, t, self.n_kv, self.head_dim).transpose(1, 2), cos, sin)
            v = v.view(rows, t, self.n_kv, self.head_dim).transpose(1, 2)
            if decoding:
                # One in-place index_put_ into the whole tensor per cache (see __init__ on views).
                which = place.row_ids[:rows]
                self.k_cache[i][which, :, pos] = k[:, :, 0]
                self.v_cache[i][which, :, pos] = v[:, :, 0]
                out = attend(self.attention, q, self.k_cache[i][:rows], self.v_cache[i][:rows], shared, bucket,
                             self.flex_options)
            else:  # prefill, eager: each prompt's tokens attend to its own row only
                assert plan is not None
                out = attend_prompts(self, i, q, k, v, plan)
            if fused:  # residual adds in the epilogues, the norm in gate/up's prologue, SiLU·mul in its epilogue
                x = self._fused_gemv(out, o_proj.weight, o_proj.bias, residual=x)
                act = self._fused_gemv(x, wgu, None, norm_weight=norm2.weight, eps=self._eps(norm2), swiglu=True)
                x = self._fused_gemv(act, down.weight, down.bias, residual=x)
                continue
            x = x + self._linear(o_proj, out, kernel(Projection.OUT))
            gate, up = project(self._norm(norm2, x), wgu, None, kernel(Projection.MLP)).chunk(2, dim=-1)
            x = x + self._linear(down, F.silu(gate) * up, kernel(Projection.MLP))
        return self._norm(self.lm.norm, x) if norm else x

    def _prefill_layers(self, x: torch.Tensor, plan: PackedPlan, rope: PromptRope | None = None) -> torch.Tensor:
        """A prefill pass (packed_prefill.py) through every layer, on each stage's device when split."""
        if self.staged is not None:
            return self.staged.prefill(x, plan, rope)
        return self._layers(x, plan.positions, None, plan=plan, rope=rope)

    @staticmethod
    def _linear(module: torch.nn.Linear, x: torch.Tensor, kernel: GemvKernel | None) -> torch.Tensor:
        """A projection the model holds as a module: the module itself with cuBLAS (its forward and hooks run,
        as the OOM bench's CPU mode relies on), else its weights through `kernel`."""
        if kernel in (None, GemvKernel.CUBLAS):
            return module(x)
        return project(x, module.weight, module.bias, kernel)

    def _next_tokens(self, hidden: torch.Tensor, penalty: torch.Tensor, first_row: int = 0,
                     decoding: bool = False, which: torch.Tensor | None = None) -> torch.Tensor:
        """hidden [rows, T, hidden] of rows first_row.. (or of the rows `which` names) -> their next greedy
        tokens [rows]; marks them seen. `decoding`: from the decode step (else a prefill's last position, eager)."""
        rows = hidden.shape[0]
        if which is None:
            which = self.row_ids[first_row : first_row + rows]
            seen = self.seen[first_row : first_row + rows]
        else:
            seen = self.seen[which]
        logits = self._logits(hidden, decoding)
        # HF's repetition penalty: every token seen so far (prompt included) is made less likely.
        penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
        logits = torch.where(seen, penalised, logits)
        tokens = logits.argmax(-1)
        self.seen.index_put_((which, tokens), torch.ones((), dtype=torch.bool, device=self.device))
        return tokens

    def _logits(self, hidden: torch.Tensor, decoding: bool) -> torch.Tensor:
        """float32 logits of the last position of each row of hidden [rows, T, hidden]."""
        last = hidden[:, -1]
        kernel = self._kernels(hidden.shape[0]).get(Projection.LM_HEAD) if decoding else None
        return self._linear(self.model.lm_head, last, kernel).float()

    def _kernels(self, rows: int) -> dict[Projection, GemvKernel]:
        """The decode step's GEMV kernel per projection for a step of `rows` rows (cuBLAS where none)."""
        return self.gemv if rows == 1 else self.rows_gemv

    def _decode_step(self, tokens: torch.Tensor, pos: torch.Tensor, penalty: torch.Tensor, bucket: int) -> torch.Tensor:
        """tokens, pos: [rows] (rows 0..n-1 of the cache); penalty: [rows] or a scalar -> next tokens [rows]."""
        x = self.lm.embed_tokens(tokens.view(-1, 1))
        hidden = self._layers(x, pos, self.shared.for_step(pos, bucket), bucket)
        return self._next_tokens(hidden, penalty.view(-1, 1), decoding=True)

    def replay_step(self, tokens: torch.Tensor, pos: torch.Tensor, penalty: torch.Tensor, furthest: int) -> torch.Tensor:
        """Queue one compiled step for the rows of `tokens` at `pos` (on the device; `furthest` the largest, known
        on the host, picks the bucket); the next tokens, copied out of the graph before the next replay."""
        if self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        # penalty as the warm-up gave it, [rows]: a [rows, 1] one (the batchers') is another input shape, and
        # another shape is a recompile inside an analyst's question (seen on the H200: 35 s on the first batch).
        return self._step(tokens, pos, penalty.reshape(-1), self.bucket_for(furthest + 1)).clone()

    def bucket_for(self, filled: int) -> int:
        return next(b for b in self.buckets if b >= filled)

    def warm_up(self, report: Callable[[str], object] | None = None) -> float:
        """Compile (and capture) the decode step for every bucket and row count now, so no analyst's question
        pays for it. `report` is called on the caller's thread (a UI's progress bar may only be drawn there)."""
        import time

        started = time.perf_counter()
        for rows in sorted({1, self.rows}):
            for bucket in self.buckets:
                if report is not None:
                    what = "one answer" if rows == 1 else f"{rows} answers at once"
                    report(f"Compiling the decode step for {what}, up to {bucket} tokens (once, while loading)")
                self.on_own_thread(self._warm_up_bucket, bucket, rows)
        return time.perf_counter() - started

    @torch.no_grad()
    def _warm_up_bucket(self, bucket: int, rows: int = 1) -> None:
        tokens = torch.zeros(rows, dtype=torch.long, device=self.device)
        penalty = torch.ones(rows, device=self.device)
        pos = self._pos[:rows].clone()  # the buffer's own prefix is a view: see __init__
        pos.fill_(bucket - 1)
        for _ in range(3):  # warm-up, record, replay
            if self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            self._step(tokens, pos, penalty, bucket).clone()
        self.seen.zero_()

    def logits_at(self, token: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decode logits for one token at one position of row 0 (for checking against the model)."""
        x = self.lm.embed_tokens(token.view(1, 1))
        hidden = self._layers(x, pos.view(1), self.shared.for_step(pos.view(1), self.max_len), self.max_len)
        return self._logits(hidden, decoding=True)[0]

    # -- one request --------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, inputs: dict[str, torch.Tensor], row: int = 0) -> int:
        """Run vision + prompt through row `row` of the cache; returns the prompt length. The first token is
        left pending in `_prefill_hidden`. (Several prompts at once: packed_prefill.prefill_prompts.)"""
        embeds, position_ids = self.capture_prompt(inputs)
        length = embeds.shape[1]
        if length >= self.max_len:
            raise ValueError(f"the prompt ({length} tokens) does not fit the {self.max_len}-token cache")
        rope = prompt_rope(self.lm, position_ids, length, self.max_len, self.dtype, self.device) if self.mrope else None
        self._mark_prompt_seen(row, inputs["input_ids"][0])
        self._set_rope_delta(row, rope.delta if rope is not None else 0)
        plan = PackedPlan.single(self.device, row, length)
        self._prefill_hidden = self._prefill_layers(embeds, plan, rope)
        return length

    def _set_rope_delta(self, row: int, delta: int) -> None:
        """Row `row`'s M-RoPE delta (mrope.py), in the decoder's tensor and in every stage's copy."""
        if self.mrope:
            for place in (self, *(self.staged.stages if self.staged is not None else ())):
                place.rope_delta[row] = delta

    def capture_prompt(self, inputs: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The prompt's embeddings as the model hands them to its language model (vision tower and merge
        included), and the position ids it hands with them (M-RoPE's; None for most models): the model's own
        forward, stopped by a pre-hook on the language model."""
        embeds, position_ids = capture_prompt(self.model, self.lm, inputs)
        return embeds.to(self.dtype), position_ids

    def capture_embeds(self, inputs: Mapping[str, Any]) -> torch.Tensor:
        """capture_prompt's embeddings alone (a packed prefill's prompts: packed_prefill.py)."""
        return self.capture_prompt(inputs)[0]

    def _mark_prompt_seen(self, row: int, prompt_ids: torch.Tensor) -> None:
        self.seen[row].zero_()
        if prompt_ids.numel():
            self.seen[row, prompt_ids.to(self.device)] = True

    def generate(self, inputs: dict[str, torch.Tensor], max_new_tokens: int, repetition_penalty: float, eos_ids: set[int],
                 streamer: BaseStreamer | None = None, should_stop: Callable[[], bool] | None = None) -> torch.Tensor:
        """Greedy tokens after the prompt, streamed one by one; returns prompt + new ids like generate().
        Runs on the decoder's own thread (where its CUDA graphs live); the caller waits."""
        from core.models.fast_decode_single import answer_alone

        return self.on_own_thread(answer_alone, self, inputs, max_new_tokens, repetition_penalty, eos_ids, streamer,
                                  should_stop)
