"""What the telemetry costs: one sample (µs per GPU), the sampler thread's CPU at 2 Hz, and decode
tokens/s with the sampler on and off in one run (interleaved rounds, medians compared).

    python bench/telemetry_overhead.py                 # GPU if there is one, else CPU with the demo model
    python bench/telemetry_overhead.py --device cpu    # force the CPU path (what CI runs, small)
    python bench/telemetry_overhead.py --model /models/Qwen2.5-VL-3B-Instruct

On a GPU without --model it builds a ~1B-parameter LLaVA with random weights (the demo model's
tokenizer, processor and CLIP tower; a 22-layer, 2048-wide Llama decoder) in a temporary folder and
loads it through Loupe's real backend: the demo model itself decodes too fast on a GPU for a
slowdown to be visible. End-of-sequence is switched off so every run decodes exactly --tokens tokens.
Writes bench/results/telemetry_overhead_<cpu|cuda>.json (or under --out).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.models import demo_model  # noqa: E402
from core.records import GenerationSettings  # noqa: E402
from core.serving.engine import Engine, load_engine  # noqa: E402
from core.settings import load_settings  # noqa: E402
from core.telemetry import nvml  # noqa: E402
from core.telemetry.sampler import Sampler, SampleReader  # noqa: E402

# A TinyLlama-shaped decoder: ~0.97B parameters with the demo tokenizer's 1024-token vocabulary.
BENCH_TEXT = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "head_dim": 64,
              "num_attention_heads": 32, "num_key_value_heads": 4}


def build_bench_model(folder: Path) -> Path:
    """The demo model's tokenizer, processor and vision tower with a ~1B random Llama decoder, on disk."""
    import torch
    from transformers import GenerationConfig, LlavaConfig, LlavaForConditionalGeneration

    demo_model.build(folder)
    config = LlavaConfig.from_pretrained(folder)
    for name, value in BENCH_TEXT.items():
        setattr(config.text_config, name, value)
    generation = GenerationConfig.from_pretrained(folder)
    with torch.device("cuda"):  # random init on the GPU: seconds instead of a minute on the CPU
        model = LlavaForConditionalGeneration(config).to(torch.bfloat16).eval()
    model.generation_config = generation
    model.save_pretrained(folder)
    (folder / "loupe-demo.json").unlink()  # not the demo: do not label it as one
    del model
    torch.cuda.empty_cache()
    return folder


def sample_cost(reps: int) -> dict[str, float | int | None]:
    reader = SampleReader()
    for _ in range(10):
        reader.read()
    gpus = len(reader.read_gpus())
    started = time.perf_counter()
    for _ in range(reps):
        reader.read()
    whole = (time.perf_counter() - started) / reps
    started = time.perf_counter()
    for _ in range(reps):
        reader.read_gpus()
    per_gpu = (time.perf_counter() - started) / reps / gpus if gpus else None
    return {"gpus": gpus, "sample_us": round(whole * 1e6, 1),
            "sample_us_per_gpu": round(per_gpu * 1e6, 1) if per_gpu is not None else None}


def idle_sampler_cpu(seconds: float) -> float:
    """CPU % of one core the sampler thread uses at 2 Hz, nothing else running."""
    sampler = Sampler(interval_s=0.5, window_s=900).start()
    started = time.monotonic()
    time.sleep(seconds)  # the quantity measured is the thread's CPU over this wall time
    elapsed = time.monotonic() - started
    sampler.stop()
    return round(sampler.cpu_seconds / elapsed * 100, 4)


def decode_rounds(engine: Engine, tokens: int, rounds: int) -> tuple[list[dict], float]:
    """Alternate sampler off/on (order flipped each round so drift cancels); tokens/s from the answer record."""
    from PIL import Image

    image = engine.prepare_image(_png(Image.new("RGB", (640, 480), "navy")))
    settings = GenerationSettings(max_new_tokens=tokens)
    engine.ask([image], "Describe the image in detail.", GenerationSettings(max_new_tokens=8)).collect()  # warm-up
    runs, sampler_cpu, sampler_wall = [], 0.0, 0.0
    for round_no in range(rounds):
        for sampler_on in ((False, True) if round_no % 2 == 0 else (True, False)):
            sampler = Sampler(interval_s=0.5, window_s=900).start() if sampler_on else None
            started = time.monotonic()
            answer = engine.ask([image], "Describe the image in detail.", settings).collect()
            if sampler is not None:
                sampler_wall += time.monotonic() - started
                sampler.stop()
                sampler_cpu += sampler.cpu_seconds
            runs.append({"sampler": sampler_on, "output_tokens": answer.output_tokens,
                         "decode_s": round(answer.timings.decode, 4), "tok_s": round(answer.tokens_per_s, 2)})
    return runs, round(sampler_cpu / sampler_wall * 100, 4) if sampler_wall else 0.0


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return f"{name or platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--model", default=None, help="a model folder (default: ~1B random LLaVA on GPU, demo on CPU)")
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per decode run")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of (sampler off, sampler on)")
    parser.add_argument("--idle-s", type=float, default=10.0, help="seconds to measure the idle sampler's CPU")
    parser.add_argument("--sample-reps", type=int, default=500)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    import torch
    import transformers

    began = time.perf_counter()
    use_cuda = args.device != "cpu" and torch.cuda.is_available()
    device = "cuda" if use_cuda else "cpu"
    with tempfile.TemporaryDirectory(prefix="loupe-bench-") as scratch:
        model = args.model
        if model is None and use_cuda:
            model = str(build_bench_model(Path(scratch) / "bench-llava-1b"))
        engine = load_engine(load_settings(model=model, device=device, max_new_tokens=args.tokens))
        engine.backend.model.generation_config.eos_token_id = None  # decode exactly --tokens every run
        cost = sample_cost(args.sample_reps)
        idle_cpu = idle_sampler_cpu(args.idle_s)
        runs, decoding_cpu = decode_rounds(engine, args.tokens, args.rounds)
        card = engine.describe()
        parameters = sum(p.numel() for p in engine.backend.model.parameters())
    off_runs = [r["tok_s"] for r in runs if not r["sampler"]]
    on_runs = [r["tok_s"] for r in runs if r["sampler"]]
    off, on = statistics.median(off_runs), statistics.median(on_runs)
    result = {
        "device": device,
        "device_name": torch.cuda.get_device_name(0) if use_cuda else _cpu_name(),
        "nvml_state": nvml.state(),
        "model": card.name,
        "model_parameters": parameters,
        "dtype": card.dtype,
        **cost,
        "sampler_interval_s": 0.5,
        "sampler_cpu_pct": idle_cpu,
        "sampler_cpu_pct_while_decoding": decoding_cpu,
        "decode_tok_s_sampler_on": on,
        "decode_tok_s_sampler_off": off,
        "decode_change_pct": round((on - off) / off * 100, 2),
        # The spread between runs of the same condition: a change inside it is not a measurable slowdown.
        "decode_tok_s_range_sampler_off": [min(off_runs), max(off_runs)],
        "decode_tok_s_range_sampler_on": [min(on_runs), max(on_runs)],
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other work on the machine during the run
        "new_tokens": args.tokens,
        "runs": runs,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "wall_s": round(time.perf_counter() - began, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"telemetry_overhead_{device}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
