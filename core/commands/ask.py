"""`python -m core ask IMAGE [IMAGE ...] "QUESTION" [--history FILE] [--model PATH] [--max-new-tokens N] [--json]`,
or `ask --no-image "QUESTION"`: the last positional argument is the question, the ones before it images (or
videos, for a model that takes them)."""
from __future__ import annotations

import argparse
import json
import sys

from core.commands.common import quiet_libraries, read_image_file
from core.errors import QuestionError
from core.inputs import conversation, images, questions, video
from core.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ask", help="ask one question about one or more images and stream the answer")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE... QUESTION",
                        help="image files, then the question (the last argument)")
    parser.add_argument("--no-image", action="store_true", help="ask the question alone, with no image")
    parser.add_argument("--history", default=None, metavar="FILE",
                        help='earlier turns: a JSON list of [question, answer] pairs, e.g. [["What is it?", "A cat."]]')
    parser.add_argument("--model", default=None, help="model folder or cached model id (default: settings)")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object, the answer record")
    parser.set_defaults(func=run)


def split_inputs(inputs: list[str], no_image: bool) -> tuple[list[str], str]:
    """(image paths, question) from the positional arguments: the question is the last one."""
    if no_image:
        if len(inputs) != 1:
            raise QuestionError(f"--no-image takes the question alone; {len(inputs) - 1} other arguments were given "
                                "(drop them, or drop --no-image to ask about them as images).")
        return [], inputs[0]
    if len(inputs) < 2:
        raise QuestionError("ask needs the image files and then the question: give at least one image and the "
                            'question, or --no-image and the question (python -m core ask --no-image "QUESTION").')
    return inputs[:-1], inputs[-1]


def run(args: argparse.Namespace) -> int:
    paths, question = split_inputs(args.inputs, args.no_image)
    history = conversation.read_history_file(args.history) if args.history else ()
    quiet_libraries()
    settings = load_settings(model=args.model, max_new_tokens=args.max_new_tokens)
    # Checked, and its images read and decoded, before paying for a model load; the engine answers this very Query.
    query = questions.build_query(
        paths, question, questions.default_generation(settings),
        prepare=lambda path: video.prepare_video(read_image_file(path), name=path) if video.is_video_name(path)
        else images.prepare(read_image_file(path), max_width=settings.max_width, max_pixels=settings.max_pixels),
        max_chars=settings.max_question_chars, max_images=settings.max_images, history=history,
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
