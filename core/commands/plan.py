"""`python -m core plan MODEL [--gpu-memory 22.2,22.2] [--max-new-tokens N] [--json]`: the ShardPlan, no weights read.

MODEL is a model folder or a folder holding only its config.json. Without --gpu-memory the plan is for
the GPUs visible here (NVML free memory, `max_memory_gb` and `split` from the settings apply); with it,
for cards of those usable sizes (GB, GPU0 first), so "does it fit on two 24 GB cards?" can be asked from
a laptop. `--json` prints one object: `gpus` (each `index`, `layers` [first, last], `modules`,
`predicted_gb`, `capacity_gb`, and the reserve's parts), `reserve_gb`, `total_gb`, `weights_gb`,
`unused_gpus`, `workload`, `device_map`, `device`. A plan that cannot fit exits 2 with the pre-flight
message on stderr. On a machine without GPUs and without --gpu-memory, a small model is reported as
running on the CPU (`device` "cpu", `gpus` empty); a large one is refused.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from core import setting_rules
from core.commands.common import quiet_libraries
from core.errors import ModelError
from core.models import preflight
from core.records import ShardPlan
from core.settings import load_settings

GB = 1e9


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("plan", help="show how a model would be split over GPUs, without loading it")
    parser.add_argument("model", help="model folder, or a folder with only its config.json")
    parser.add_argument("--gpu-memory", default=None, help="plan for cards with this many usable GB each, e.g. 22.2,22.2")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.set_defaults(func=run)


def _print_plan(plan: ShardPlan) -> None:
    print(f"{plan.model}: {plan.dtype}, {plan.weights_bytes / GB:.1f} GB of weights, "
          f"{plan.gpus[-1].layers[1] + 1} decoder layers")
    print(f"reserve sized for {plan.context_tokens} tokens of context ({plan.image_tokens} image tokens, "
          f"{plan.max_new_tokens} new tokens), batch {plan.batch}")
    for g in plan.gpus:
        print(f"GPU{g.index}  layers {g.layers[0]}-{g.layers[1]} ({g.layers[1] - g.layers[0] + 1})  "
              f"{g.predicted_bytes / GB:.1f} of {g.capacity_bytes / GB:.1f} GB  "
              f"= weights {g.weights_bytes / GB:.1f} + reserve {g.reserve_bytes / GB:.1f} "
              f"(KV cache {g.kv_cache_bytes / GB:.2f}, activations {g.activation_bytes / GB:.2f}, "
              f"CUDA context {g.context_bytes / GB:.1f})")
        if g.modules:
            print(f"      + {', '.join(g.modules)}")
    for index in plan.unused_gpus:
        print(f"GPU{index}  unused (the model fits on fewer GPUs)")
    print(f"reserve {plan.reserve_bytes / GB:.1f} GB, total {plan.total_bytes / GB:.1f} GB of "
          f"{sum(g.capacity_bytes for g in plan.gpus) / GB:.1f} GB on the GPUs used")
    for note in plan.notes:
        print(f"note: {note}")


def run(args: argparse.Namespace) -> int:
    quiet_libraries()
    settings = load_settings(max_new_tokens=args.max_new_tokens)
    folder = Path(args.model).expanduser()
    if not folder.is_dir():
        raise ModelError(f"No model folder at {args.model} (give a folder holding config.json).")
    if args.gpu_memory:
        cards = preflight.plan_for_cards(folder, setting_rules.parse_memory(args.gpu_memory, setting="--gpu-memory"), settings)
        plan: ShardPlan | None = cards
        device, notes = "cuda", list(cards.notes)
    else:
        clearance = preflight.check(folder, settings, name=folder.resolve().name)
        plan, device, notes = clearance.plan, clearance.device, list(clearance.notes)
    if args.json:
        record = plan.to_json() if plan else {"model": folder.resolve().name, "dtype": "float32", "fits": True,
                                              "gpus": [], "unused_gpus": [], "reserve_gb": 0.0, "total_gb": 0.0}
        print(json.dumps({**record, "device": device, "notes": notes}, ensure_ascii=False))
        return 0
    if plan is None:
        print(f"{folder.resolve().name}: {notes[0] if notes else 'running on the CPU'}")
        return 0
    _print_plan(plan)
    return 0
