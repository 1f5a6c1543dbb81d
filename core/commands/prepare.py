"""`python -m core prepare IMAGE [--max-width N] [--json] [--out FILE]`: image preparation only."""
from __future__ import annotations

import argparse
import json

from core.commands.common import read_image_file
from core.inputs import images
from core.settings import load_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("prepare", help="prepare an image as the model would see it")
    parser.add_argument("image")
    parser.add_argument("--max-width", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", default=None, help="write the prepared image here (PNG, JPEG, ...)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(max_width=args.max_width)
    prepared = images.prepare(read_image_file(args.image), max_width=settings.max_width, max_pixels=settings.max_pixels)
    if args.out:
        prepared.image.save(args.out)
    if args.json:
        print(json.dumps({"width": prepared.width, "height": prepared.height, "notes": list(prepared.notes)},
                         ensure_ascii=False))
    else:
        print(f"{prepared.width}×{prepared.height} ({prepared.source_format})")
        for note in prepared.notes:
            print(f"- {note}")
    return 0
