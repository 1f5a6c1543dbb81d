"""Prompts that begin alike share their cached prefix (core/models/shared_prefix.py), on the real demo model in
float32: when sharing applies, and that answers prefilled from another row's prefix are token for token the
answers each prompt gets alone, in Compare's rows and in the continuous batcher."""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from core.models.fast_decode import FastDecoder
from core.models.fast_decode_batcher import ContinuousBatcher
from core.models.fast_decode_rows import generate_rows
from core.models.shared_prefix import MIN_SHARED, media_token_ids, shared_length
from tests.demo_prompts import greedy_reference, image_prompt

QUESTIONS = ("Describe the picture in one long sentence, please.", "图中有什么？", "What colour is this?")
NEW = 32


@pytest.fixture(scope="module")
def demo(demo_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir).eval()
    processor = AutoProcessor.from_pretrained(demo_model_dir)

    def prompt(question: str, colour: str = "orange", text_first: bool = False) -> dict:
        return image_prompt(processor, question, colour, text_first)

    prompts = [prompt(q) for q in QUESTIONS]  # one image, three questions
    references = [greedy_reference(model, p, NEW) for p in prompts]
    return model, prompt, prompts, references


def test_only_prompts_with_the_same_images_and_a_text_only_rest_share(demo) -> None:
    model, prompt, prompts, _references = demo
    media = media_token_ids(model.config)
    assert media == {model.config.image_token_id}
    first, second = prompts[0], prompts[1]
    shared = shared_length(second, first, media)
    ids = second["input_ids"][0]
    assert shared >= MIN_SHARED and torch.equal(ids[:shared], first["input_ids"][0][:shared])
    assert not (ids[shared:] == model.config.image_token_id).any()  # the image is all in the prefix
    assert shared_length(second, second, media) == ids.shape[0] - 1  # the same prompt: all but its last token
    assert shared_length(prompt(QUESTIONS[1], "navy"), first, media) == 0  # another image
    assert shared_length(prompt(QUESTIONS[1], text_first=True), first, media) == 0  # the image after the text
    assert shared_length(second, first, frozenset()) == 0  # a model whose placeholders are unknown


def test_compare_rows_from_a_shared_prefix_answer_as_alone(demo, monkeypatch) -> None:
    model, _prompt, prompts, references = demo
    fast = FastDecoder(model, 512, compile=False, rows=4)
    forwards: list[object] = []  # the model's own forward (vision tower): prompts that share nothing
    passes: list[int] = []  # prefill passes over the decoder's layers, by tokens computed
    capture, layers = FastDecoder.capture_embeds, FastDecoder._layers

    def counted_capture(self, inputs):
        forwards.append(inputs)
        return capture(self, inputs)

    def counted_layers(self, x, pos, shared, bucket=0, plan=None, **more):
        if shared is None:
            passes.append(x.shape[1])
        return layers(self, x, pos, shared, bucket, plan, **more)

    monkeypatch.setattr(FastDecoder, "capture_embeds", counted_capture)
    monkeypatch.setattr(FastDecoder, "_layers", counted_layers)
    rows = generate_rows(fast, prompts, NEW, 1.005, set())
    assert forwards == [prompts[0]]  # rows 1 and 2 copied row 0's prefix
    whole = prompts[0]["input_ids"].shape[1]
    assert len(passes) == 1 and whole < passes[0] < whole + 40  # one pass: row 0 whole, the questions of 1 and 2
    assert [list(r.new_ids) for r in rows] == [ref[0, -NEW:].tolist() for ref in references]
    fast.close()


@pytest.mark.parametrize("ahead", [False, True], ids=["read-then-launch", "launch-ahead"])
def test_answers_joining_with_a_shared_prefix_answer_as_alone(demo, ahead) -> None:
    model, _prompt, prompts, references = demo
    fast = FastDecoder(model, 512, compile=False, rows=4)
    fast.read_ahead = ahead
    batcher = ContinuousBatcher(fast)
    joined: list = []

    def join_later() -> bool:  # the other two arrive while the first decodes
        if len(first.produced) == 6 and not joined:
            joined.extend(batcher.submit(p, NEW, 1.005, set()) for p in prompts[1:])
        return False

    first = batcher.submit(prompts[0], NEW, 1.005, set(), should_stop=join_later)
    assert torch.equal(batcher.wait(first), references[0])
    assert all(torch.equal(batcher.wait(r), ref) for r, ref in zip(joined, references[1:]))
    assert batcher.prefixes_shared == 2 and batcher.joined_running == 2
    fast.close()
