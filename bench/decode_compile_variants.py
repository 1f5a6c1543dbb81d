"""Which inductor options and which loop order make Loupe's compiled decode step fastest (issue: decode speed).

    python3 bench/decode_compile_variants.py [--budget-s 300]      # on the GPU machine (an H200)
    python bench/decode_compile_variants.py --cpu                   # CI: the demo model, 16 tokens, not compiled

Builds the 7B-class model of bench/llava_7b.py in GPU memory (random bf16 weights, nothing saved), then for
each variant builds Loupe's own FastDecoder (one row; the product's decode attention on a GPU, the split-KV
kernel) with other inductor options or other GEMV kernels per projection,
compiles it (timed), and decodes 256 greedy tokens after a 659-token text prompt twice (the best kept), next
to the bandwidth limit measured in the same run. Variants (`--variants a,b`: only those, in that order):
  cublas        every projection a cuBLAS GEMV; the next step launched before a token is read (token_readback.py)
  own_qkv_out   QKV and attention's output projection through Loupe's Triton GEMV (core/models/row_gemv.py)
  own_qkv, own_out  one of them only
  own_mlp       QKV, O, gate/up and down through it (the LM head through cuBLAS)
  own_all       every projection through it (the product's choice beside the split-KV kernel)
  fused         own_all with the norms, residual adds and SiLU·mul folded into the GEMVs (core/models/fused_gemv.py)
  no_ahead      the same compiled step, each token read before the next step is launched (the loop before)
  lm_head       the LM head as an Inductor reduction (core/models/decode_gemv.py), the rest cuBLAS
  qkv_out_head  QKV, attention's output projection and the LM head as reductions (RMSNorm's scaling fused in)
  all           every projection of the one-row step as a reduction
  head_split16  lm_head, FlexAttention's cache split in 16 parts (its default: 2 per SM over 8 KV heads, 32);
                FlexAttention's options apply only with --attention flex
  all_cdt       all, with Inductor's coordinate-descent tuning of the reductions' block sizes
  cdt           cublas, with coordinate-descent tuning of Inductor's own kernels (norms, RoPE, attention's parts)
  head_cdt      lm_head, with coordinate-descent tuning
  qkv_out_head_cdt  qkv_out_head, with coordinate-descent tuning
  pdl_cdt       cublas + programmatic dependent launch for Triton kernels + coordinate-descent tuning (gpt-fast's)
  autotune      pdl_cdt + max_autotune (GEMMs from cuBLAS or Triton templates, whichever is faster)
--gemv-configs FILE takes row_gemv's blocks per shape from bench/gemv_sweep.py's output (the best of each).
Each variant says whether its 256 tokens equal the first variant's. A variant that would not finish inside the
budget is skipped and says so. Writes the JSON (--out) after every variant.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import llava_7b  # noqa: E402  (bench/, beside this script)
import torch  # noqa: E402
from decode_speed import copy_bandwidth_gbps, decoder_bytes  # noqa: E402
from llava_7b import timed  # noqa: E402

from core.models.decode_gemv import GemvKernel, Projection  # noqa: E402

NEW_TOKENS = 256
PROMPT = 659
R = GemvKernel.REDUCTION
OWN = GemvKernel.TRITON
EVERY = dict.fromkeys(Projection, R)
QKV_OUT_HEAD = {Projection.QKV: R, Projection.OUT: R, Projection.LM_HEAD: R}
CDT = {"coordinate_descent_tuning": True}
PDL_CDT = {"triton.enable_pdl": True, **CDT}
# name: (inductor options beyond the product's or "reuse" the compiled step before it, launch ahead, GEMV kernel
# per projection (cuBLAS where none), FlexAttention kernel options, expected compile seconds)
FUSED = {"fused"}  # variants whose one-row step folds the small kernels into its GEMVs (FastDecoder's `fused`)
VARIANTS: dict[str, tuple[dict | str | None, bool, dict[Projection, GemvKernel], dict, int]] = {
    "cublas": (None, True, {}, {}, 60),
    "no_ahead": ("reuse", False, {}, {}, 0),
    "own_qkv_out": (None, True, {Projection.QKV: OWN, Projection.OUT: OWN}, {}, 60),
    "own_qkv": (None, True, {Projection.QKV: OWN}, {}, 60),
    "own_out": (None, True, {Projection.OUT: OWN}, {}, 60),
    "own_mlp": (None, True, {Projection.QKV: OWN, Projection.OUT: OWN, Projection.MLP: OWN}, {}, 60),
    "own_all": (None, True, dict.fromkeys(Projection, OWN), {}, 60),
    "fused": (None, True, dict.fromkeys(Projection, OWN), {}, 60),
    "lm_head": (None, True, {Projection.LM_HEAD: R}, {}, 60),
    "qkv_out_head": (None, True, QKV_OUT_HEAD, {}, 60),
    "all": (None, True, EVERY, {}, 60),
    "head_split16": (None, True, {Projection.LM_HEAD: R}, {"SPLIT_KV": 16}, 60),
    "all_cdt": (CDT, True, EVERY, {}, 120),
    "cdt": (CDT, True, {}, {}, 110),
    "head_cdt": (CDT, True, {Projection.LM_HEAD: R}, {}, 110),
    "qkv_out_head_cdt": (CDT, True, QKV_OUT_HEAD, {}, 110),
    "pdl_cdt": (PDL_CDT, True, {}, {}, 90),
    "autotune": ({**PDL_CDT, "max_autotune": True}, True, {}, {}, 200),
}


def known(options: dict) -> dict:
    """The options this torch's inductor has (an unknown key would fail the compile)."""
    names = set(torch._inductor.config.get_config_copy())
    return {key: value for key, value in options.items() if key in names}


def decode_rate(fast, inputs: dict, new: int) -> tuple[float, torch.Tensor]:
    """Tokens/s after the first token (best of two answers of `new` tokens), and the tokens themselves."""
    fast.generate(dict(inputs), 8, 1.005, set())
    t1 = min(timed(lambda: fast.generate(dict(inputs), 1, 1.005, set())) for _ in range(2))
    runs = [timed(lambda: fast.generate(dict(inputs), new, 1.005, set())) for _ in range(2)]
    return (new - 1) / (min(runs) - t1), fast.generate(dict(inputs), new, 1.005, set())


def use_swept_configs(sweep: Path) -> dict[str, dict]:
    """row_gemv's blocks for each shape bench/gemv_sweep.py measured: its fastest config (what it set, by shape)."""
    from core.models import row_gemv

    chosen = {}
    for name, shape in json.loads(sweep.read_text(encoding="utf-8"))["shapes"].items():
        if shape.get("triton_best"):
            best = shape["triton_best"][0]
            config = row_gemv.GemvConfig(best["block_n"], best["block_k"], best["warps"], best["stages"])
            row_gemv.CONFIGS[(shape["n"], shape["k"])] = config
            chosen[name] = vars(config)
    return chosen


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget-s", type=float, default=300)  # on the CPU, 300 s leaves room for a busy machine
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="which variants, in this order")
    parser.add_argument("--attention", default="auto", help="the decode attention (auto: split on a GPU)")
    parser.add_argument("--gemv-configs", default=None, help="bench/gemv_sweep.py's JSON: its best blocks per shape")
    args = parser.parse_args()
    on_gpu = torch.cuda.is_available() and not args.cpu
    new = NEW_TOKENS if on_gpu else 16
    started = time.perf_counter()
    from core.models import demo_model
    from core.models.decode_attention import DecodeAttention
    from core.models.fast_decode import STEP_COMPILE_OPTIONS, FastDecoder

    out = Path(args.out) if args.out else ROOT / "bench" / "results" / "decode_compile_variants_cuda.json"
    result: dict = {"device": torch.cuda.get_device_name(0) if on_gpu else "cpu", "torch": torch.__version__,
                    "product_options": STEP_COMPILE_OPTIONS, "new_tokens": new, "prompt_tokens": PROMPT,
                    "variants": {}}
    attention = DecodeAttention(args.attention) if on_gpu else DecodeAttention.SDPA  # flex runs unfused on a CPU
    if args.gemv_configs:
        result["gemv_configs"] = use_swept_configs(Path(args.gemv_configs))
    if on_gpu:
        result["hbm_GBps"] = round(copy_bandwidth_gbps(), 1)
        model = llava_7b.build_on_gpu(demo_model._build_tokenizer())
    else:  # the plumbing only: the demo model, its step not compiled (the options are recorded, not applied)
        from core.serving.engine import load_engine
        from core.settings import load_settings

        model = load_engine(load_settings(device="cpu")).backend.model
    result["bytes_per_token_GB"] = round(decoder_bytes(model) / 1e9, 4)
    limit = result.get("hbm_GBps", 0.0) / result["bytes_per_token_GB"]
    result["bandwidth_limit_tok_s"] = round(limit, 1)
    vocab = model.lm_head.weight.shape[0]
    ids = torch.randint(10, vocab, (1, PROMPT), generator=torch.Generator().manual_seed(0)).to(model.device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    base_tokens = None
    fast = None
    chosen = args.variants.split(",")
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants: {sorted(unknown)}; known: {list(VARIANTS)}")
    for name in chosen:
        extra, ahead, kernels, flex_options, expected_s = VARIANTS[name]
        left = args.budget_s - (time.perf_counter() - started)
        expected_s = expected_s if on_gpu else 0  # nothing is compiled on the CPU
        if left < expected_s + 20:
            result["variants"][name] = {"skipped": f"time budget: {left:.0f} s left, needs about {expected_s + 20} s"}
            continue
        entry: dict = {"read_ahead": ahead, "flex_options": flex_options}
        try:
            if extra != "reuse":
                if fast is not None:
                    fast.close()
                options = known({**STEP_COMPILE_OPTIONS, **(extra if isinstance(extra, dict) else {})})
                entry["options"] = options
                if not on_gpu:  # neither Triton kernel runs here outside its interpreter: the plumbing only
                    kernels = {p: k for p, k in kernels.items() if k is not OWN}
                fast = FastDecoder(model, 4096 if on_gpu else 1024, attention=attention, compile=on_gpu,
                                   compile_options=options, gemv=kernels, flex_options=flex_options,
                                   fused=name in FUSED and on_gpu)  # on the CPU, Triton's kernels do not run
                entry["fused"] = fast.fused
                entry["attention"] = str(fast.attention)
                entry["gemv"] = {str(p): str(k) for p, k in fast.gemv.items()}
                entry["compile_s"] = round(fast.warm_up(), 1)
            assert fast is not None
            fast.read_ahead = ahead
            rate, tokens = decode_rate(fast, inputs, new)
            base_tokens = tokens if base_tokens is None else base_tokens
            entry.update(decode_tok_s=round(rate, 2), pct_of_limit=round(100 * rate / limit, 1) if limit else None,
                         ms_per_token=round(1e3 / rate, 3), same_tokens_as_base=bool(torch.equal(tokens, base_tokens)))
        except Exception as exc:  # noqa: BLE001 - one variant failing keeps the others' figures
            entry["error"] = f"{type(exc).__name__}: {exc}"[:600]
        entry["done_at_s"] = round(time.perf_counter() - started, 1)
        result["variants"][name] = entry
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(json.dumps({name: entry}), flush=True)
    rated = {k: v["decode_tok_s"] for k, v in result["variants"].items() if "decode_tok_s" in v}
    result["best"] = max(rated, key=rated.__getitem__) if rated else None
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
