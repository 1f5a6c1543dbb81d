"""`python -m core ask IMAGE "QUESTION" [--model PATH] [--max-new-tokens N] [--json]`."""
from __future__ import annotations

import argparse
import json
import sys

from core.commands.common import quiet_libraries, read_image_file
from core.inputs import images, questions
from core.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ask", help="ask one question about one image and stream the answer")
    parser.add_argument("image")
    parser.add_argument("question")
    parser.add_argument("--model", default=None, help="model folder or cached model id (default: settings)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object, the answer record")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    quiet_libraries()
    settings = load_settings(model=args.model, max_new_tokens=args.max_new_tokens)
    # Checked, and its image read and decoded, before paying for a model load; the engine answers this very Query.
    query = questions.build_query(
        [args.image], args.question, questions.default_generation(settings),
        prepare=lambda path: images.prepare(read_image_file(path), max_width=settings.max_width,
                                            max_pixels=settings.max_pixels),
        max_chars=settings.max_question_chars, max_images=settings.max_images,
    )
    from core.serving.engine import load_engine  # torch + transformers: only imported when a model is needed

    engine = load_engine(settings)
    stream = engine.stream(query)
    if args.json:
        answer = stream.collect()
        print(json.dumps(answer.to_json(), ensure_ascii=False))
        return 0
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    assert stream.answer is not None
    answer = stream.answer
    t = answer.timings
    print("\n")
    if answer.truncated:
        print(f"[cut at {answer.settings.max_new_tokens} new tokens, trimmed to the last sentence end]")
    print(f"model {answer.model} | {answer.input_tokens} tokens in, {answer.output_tokens} out, "
          f"{answer.tokens_per_s:.1f} tokens/s")
    print(f"preprocess {t.preprocess:.3f} s | vision {t.vision:.3f} s | prefill {t.prefill:.3f} s | "
          f"decode {t.decode:.3f} s | total {t.total:.3f} s")
    print("peak memory: " + ", ".join(f"{k} {v:.2f} GB" for k, v in answer.peak_memory_gb.items()))
    for note in answer.image_notes:
        print(f"image: {note}")
    return 0
