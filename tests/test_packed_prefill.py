"""Several prompts prefilled in one pass (core/models/packed_prefill.py), on the real demo model in float32: the
pass's index plan, and that prompts admitted together (whole, copying a running row's prefix, copying from
one prefilled in the same pass) are token for token the answers each gets alone; a prompt that fails in a
pass fails alone."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from core.models import fast_decode_batcher, packed_prefill
from core.models.fast_decode import FastDecoder
from core.models.fast_decode_batcher import ContinuousBatcher
from core.models.fast_decode_rows import generate_rows
from core.models.packed_prefill import Segment, build
from tests.demo_prompts import greedy_reference, image_prompt

NEW = 24
FIRST = "Describe the picture in one long sentence, please."
QUESTION = "图中有什么？"
LONGER = "图中有什么？请一句一句地详细回答。"  # begins as QUESTION: copies from QUESTION's row, which copied too


@pytest.fixture(scope="module")
def demo(demo_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir).eval()
    processor = AutoProcessor.from_pretrained(demo_model_dir)
    prompts = [image_prompt(processor, FIRST, "orange"), image_prompt(processor, QUESTION, "orange"),
               image_prompt(processor, LONGER, "orange"), image_prompt(processor, QUESTION, "navy")]
    return model, processor, prompts, [greedy_reference(model, p, NEW) for p in prompts]


def test_the_plan_resolves_chained_prefixes_and_masks_each_prompt_to_its_own_row() -> None:
    # row 5 holds a running prompt; 0 is whole; 1 copies 6 positions of 0; 2 copies 9 of 1 (6 of them 0's);
    # 3 copies 4 of the running row 5.
    segments = (Segment(1, 6, 12, 0), Segment(0, 0, 10), Segment(2, 9, 11, 1), Segment(3, 4, 8, 5))
    plan = build(torch.device("cpu"), segments)
    assert [s.row for s in plan.segments] == [0, 1, 2, 3]  # whole prompts first, then in the order given
    assert plan.whole_tokens == 10
    assert plan.positions.tolist() == [*range(10), *range(6, 12), *range(9, 11), *range(4, 8)]
    assert plan.token_rows.tolist() == [0] * 10 + [1] * 6 + [2] * 2 + [3] * 4
    assert plan.last.tolist() == [9, 15, 17, 21] and plan.rows.tolist() == [0, 1, 2, 3]
    assert plan.copy is not None
    copies = list(zip(*(t.tolist() for t in plan.copy)))  # (dst row, dst pos, src row, src pos)
    assert copies == ([(1, p, 0, p) for p in range(6)] + [(2, p, 0, p) for p in range(6)]
                      + [(2, p, 1, p) for p in range(6, 9)] + [(3, p, 5, p) for p in range(4)])
    assert plan.keys is not None and plan.mask is not None
    assert plan.mask.shape == (6 + 2 + 4, 12 + 11 + 8)
    # row 1's first computed token (position 6) sees its own positions 0..6 and nothing of rows 2 and 3
    assert plan.mask[0].nonzero().flatten().tolist() == list(range(7))
    # row 3's last token (position 7) sees its own 8 positions, the last keys
    assert plan.mask[-1].nonzero().flatten().tolist() == list(range(23, 31))


def test_arrivals_admitted_in_one_pass_answer_as_each_alone(demo, monkeypatch) -> None:
    model, _processor, prompts, references = demo
    fast = FastDecoder(model, 512, compile=False, rows=4)
    batcher = ContinuousBatcher(fast)
    passes: list[tuple[Segment, ...]] = []
    real_build = packed_prefill.build

    def recorded(device, segments):
        passes.append(tuple(segments))
        return real_build(device, segments)

    monkeypatch.setattr(packed_prefill, "build", recorded)
    joined: list = []

    def three_arrive_together() -> bool:  # on the decoder's thread: all three are pending at the next step
        if len(first.produced) == 4 and not joined:
            joined.extend(batcher.submit(p, NEW, 1.005, set()) for p in prompts[1:])
        return False

    first = batcher.submit(prompts[0], NEW, 1.005, set(), should_stop=three_arrive_together)
    answers = [batcher.wait(first)] + [batcher.wait(r) for r in joined]
    assert all(torch.equal(a, ref) for a, ref in zip(answers, references))
    assert len(passes) == 2 and len(passes[1]) == 3  # the three arrivals in one pass
    question, longer, other_image = passes[1]
    assert question.source == 0 and question.start > 16  # the image's prefix, from the running row
    assert longer.source == question.row and longer.start > question.start  # a longer prefix, from the same pass
    assert other_image.start == 0  # another image: computed whole
    assert batcher.prefixes_shared == 2 and batcher.joined_running == 3
    fast.close()


def test_a_prompt_that_fails_in_a_pass_fails_alone(demo, monkeypatch) -> None:
    model, processor, prompts, references = demo
    fits = prompts[0]["input_ids"].shape[1] + NEW + 2
    too_long = image_prompt(processor, QUESTION * 12, "white")
    assert too_long["input_ids"].shape[1] >= fits
    fast = FastDecoder(model, fits, compile=False, rows=4)
    batcher = ContinuousBatcher(fast)
    passes: list[int] = []
    real = fast_decode_batcher.prefill_prompts

    def recorded(fast, prompts, *args, **kwargs):
        passes.append(len(prompts))
        return real(fast, prompts, *args, **kwargs)

    monkeypatch.setattr(fast_decode_batcher, "prefill_prompts", recorded)
    joined: list = []

    def two_arrive_together() -> bool:
        if len(first.produced) == 2 and not joined:
            joined.extend(batcher.submit(p, NEW, 1.005, set()) for p in (too_long, prompts[3]))
        return False

    first = batcher.submit(prompts[0], NEW, 1.005, set(), should_stop=two_arrive_together)
    assert torch.equal(batcher.wait(first), references[0])
    with pytest.raises(ValueError, match="does not fit"):
        batcher.wait(joined[0])
    assert torch.equal(batcher.wait(joined[1]), references[3])
    assert passes == [1, 2, 1, 1]  # the pair's pass failed: each was tried alone, only the long one failed
    fast.close()


def test_a_decoder_with_its_own_prefill_prefills_each_prompt_alone(demo, monkeypatch) -> None:
    model, _processor, prompts, references = demo
    fast = FastDecoder(model, 512, compile=False, rows=4)
    fast.packs_prefills = False  # as XComposer's (its Partial-LoRA prefill is the model's own forward)
    alone: list[int] = []
    prefill = FastDecoder.prefill

    def counted(self, inputs, row=0):
        alone.append(row)
        return prefill(self, inputs, row)

    monkeypatch.setattr(FastDecoder, "prefill", counted)
    rows = generate_rows(fast, prompts, NEW, 1.005, set())
    assert alone == [0, 1, 2, 3]
    assert [list(r.new_ids) for r in rows] == [ref[0, -NEW:].tolist() for ref in references]
    fast.close()
