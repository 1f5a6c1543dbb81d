"""A decoder split over devices keeps a fast path: a compiled step per stage (core/models/decode_stages.py).
Without two GPUs, the closest run: the real demo model in float32 cut into two stages on the one CPU (each
stage its own step function, the hidden state handed between them, prefill through both), checked against
generate(); and the stage bounds a real split model's devices give."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText

from core.models.decode_stages import StagedStep, stage_bounds
from core.models.fast_decode import FastDecoder
from core.models.fast_decode_batcher import ContinuousBatcher
from core.models.fast_decode_rows import generate_rows
from tests.demo_prompts import demo_prompts, greedy_reference, image_prompt

QUESTIONS = ("Describe the picture in one long sentence, please.", "图中有什么？", "What colour is this?")
NEW = 24


@pytest.fixture(scope="module")
def loaded(demo_model_dir):
    demo = demo_prompts(demo_model_dir, QUESTIONS, NEW, fixed_length=True)
    return demo.model, demo.processor, demo.prompts, demo.references


def test_stages_follow_the_layers_devices() -> None:
    cpu, gpu0, gpu1 = torch.device("cpu"), torch.device("cuda", 0), torch.device("cuda", 1)
    assert stage_bounds([gpu0] * 4) == [(0, 4)]  # one device: one step, as before
    assert stage_bounds([gpu0, gpu0, gpu1, gpu1, gpu1]) == [(0, 2), (2, 5)]  # two cards: 2 + 3 layers
    assert stage_bounds([gpu0, gpu1, gpu0]) == [(0, 1), (1, 2), (2, 3)]  # back and forth: three stages
    assert stage_bounds([cpu] * 4, forced=(1, 3)) == [(0, 1), (1, 3), (3, 4)]
    assert stage_bounds([cpu] * 2, forced=(0, 2)) == [(0, 2)]  # cuts at the ends change nothing


def _counted(fast: FastDecoder) -> list[int]:
    """Calls of each stage's step function, in order (the stages' runs wrapped)."""
    assert isinstance(fast.staged, StagedStep)
    calls: list[int] = []

    def wrap(number, run):
        def counted(*args):
            calls.append(number)
            return run(*args)
        return counted

    fast.staged.runs = [wrap(n, run) for n, run in enumerate(fast.staged.runs)]
    return calls


def test_two_stages_answer_as_generate(loaded) -> None:
    model, _processor, prompts, references = loaded
    fast = FastDecoder(model, 512, compile=False, stage_cuts=(1,))
    assert [(s.first, s.last) for s in fast.staged.stages] == [(0, 1), (1, 2)]
    calls = _counted(fast)
    out = fast.generate(prompts[0], NEW, 1.005, set())
    assert torch.equal(out, references[0])
    assert calls == [0, 1] * (NEW - 1)  # every step: the first stage, then the second (the prefill gave token 1)
    fast.close()


def test_two_stages_with_rows_shared_prefixes_and_the_batcher(loaded) -> None:
    model, processor, _prompts, _references = loaded
    same_image = [image_prompt(processor, q, "orange") for q in QUESTIONS]  # one pass: 1 whole, 2 copying
    expected = [greedy_reference(model, p, NEW) for p in same_image]
    fast = FastDecoder(model, 512, compile=False, rows=4, stage_cuts=(1,))
    rows = generate_rows(fast, same_image, NEW, 1.005, set())
    assert [list(r.new_ids) for r in rows] == [ref[0, -NEW:].tolist() for ref in expected]
    batcher = ContinuousBatcher(fast)
    held = [batcher.submit(p, NEW, 1.005, set()) for p in same_image]
    assert all(torch.equal(batcher.wait(r), ref) for r, ref in zip(held, expected))
    fast.close()


def test_each_stage_compiles_to_its_own_step(demo_model_dir) -> None:
    """Compiled as the backend compiles it on a GPU (CUDA graphs aside): two stage graphs, the same tokens."""
    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir).eval()
    eager = FastDecoder(model, 64, compile=False)
    fast = FastDecoder(model, 64, compile=True, stage_cuts=(1,))
    assert len(fast.staged.runs) == 2 and all(hasattr(run, "_torchdynamo_orig_callable") for run in fast.staged.runs)
    token, pos, penalty = torch.tensor([7]), torch.tensor([3]), torch.tensor([1.0])
    with torch.no_grad():
        for step in range(3):  # the caches written by the stages are read back by the next step
            pos.fill_(3 + step)
            got, want = fast._step(token, pos, penalty, 64), eager._decode_step(token, pos, penalty, 64)
            assert torch.equal(got, want)
            token = got
    fast.close()
    eager.close()


def test_a_decoder_partly_offloaded_keeps_generate(demo_model_dir) -> None:
    from core.models.fast_decode_support import check, language_model

    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir).eval()
    assert check(model).reason == "static KV cache + compiled decode step"
    language_model(model).layers[1].to("meta")  # as accelerate leaves a layer offloaded to disk
    status = check(model)
    assert not status.enabled and "offloaded" in status.reason
