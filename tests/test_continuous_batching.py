"""Continuous batching on the fast path (core/models/fast_decode_batcher.py) on the real demo model, float32 on
the CPU: answers that join the running rows mid-answer are token for token the answers they get alone."""
from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image

from core.models.fast_decode import FastDecoder
from core.models.fast_decode_batcher import ContinuousBatcher
from tests.demo_prompts import demo_prompts
from tests.image_factory import encode

QUESTIONS = ("Describe the picture in one long sentence, please.", "图中有什么？", "What colour is this?")
NEW = 40


@pytest.fixture(scope="module")
def loaded(demo_model_dir):
    demo = demo_prompts(demo_model_dir, QUESTIONS, NEW, fixed_length=True)
    return demo.model, demo.prompts, demo.references

def _decoder(model, length: int, rows: int, ahead: bool) -> FastDecoder:
    fast = FastDecoder(model, length, compile=False, rows=rows)
    fast.read_ahead = ahead  # the GPU's order (a step launched before the last is read), run on the CPU
    return fast


AHEAD = pytest.mark.parametrize("ahead", [False, True], ids=["read-then-launch", "launch-ahead"])


@AHEAD
def test_answers_that_join_mid_answer_are_their_answers_alone(loaded, ahead) -> None:
    model, prompts, references = loaded
    batcher = ContinuousBatcher(_decoder(model, 512, 4, ahead))
    joined: dict[int, object] = {}

    def first_stop_rule() -> bool:  # runs on the decoder's thread after each of the first answer's tokens
        produced = len(first.produced)
        if produced == 5 and 1 not in joined:  # the second question arrives while the first decodes
            joined[1] = batcher.submit(prompts[1], NEW, 1.005, set())
        if produced == 12 and 2 not in joined:  # and a third while both decode
            joined[2] = batcher.submit(prompts[2], NEW, 1.005, set())
        return False

    first = batcher.submit(prompts[0], NEW, 1.005, set(), should_stop=first_stop_rule)
    assert torch.equal(batcher.wait(first), references[0])
    assert torch.equal(batcher.wait(joined[1]), references[1])  # type: ignore[arg-type]
    assert torch.equal(batcher.wait(joined[2]), references[2])  # type: ignore[arg-type]
    assert batcher.joined_running == 2 and batcher.most_rows_at_once == 3
    batcher.fast.on_own_thread(lambda: None)  # queued behind the loop: it has returned
    assert batcher.idle
    clock = batcher.clock  # where the loop's time went (the concurrency benchmark records it)
    # alone (the first token comes from the prefill), then with the rows
    assert clock.steps[1] >= 4 and clock.steps[4] >= 1 and set(clock.steps) == {1, 4}
    assert clock.running_s >= clock.admitting_s + clock.waiting_s and clock.admitting_s > 0


@AHEAD
def test_a_cancelled_answer_leaves_its_row_and_the_others_go_on(loaded, ahead) -> None:
    model, prompts, references = loaded
    batcher = ContinuousBatcher(_decoder(model, 512, 2, ahead))
    stop = threading.Event()
    cancelled = batcher.submit(prompts[0], NEW, 1.005, set(), should_stop=stop.is_set)
    stop.set()  # it stops after its next token, whenever the loop gets there
    kept = batcher.submit(prompts[1], NEW, 1.005, set())
    late = batcher.submit(prompts[2], NEW, 1.005, set())  # waits for a free row: 2 rows, 3 answers
    short = batcher.wait(cancelled)
    assert short.shape[1] < references[0].shape[1] and torch.equal(short, references[0][:, : short.shape[1]])
    assert torch.equal(batcher.wait(kept), references[1]) and torch.equal(batcher.wait(late), references[2])


def test_a_prompt_that_does_not_fit_fails_alone(loaded) -> None:
    model, prompts, references = loaded
    batcher = ContinuousBatcher(FastDecoder(model, 16, compile=False, rows=2))  # 16 positions: too short
    too_long = batcher.submit(prompts[0], NEW, 1.005, set())
    with pytest.raises(ValueError, match="does not fit the 16-token cache"):
        batcher.wait(too_long)
    # the loop is still alive for the next question
    short = {"input_ids": prompts[2]["input_ids"][:, -8:]}  # text only: 8 tokens fit
    out = batcher.generate(short, 4, 1.005, set())
    assert out.shape[1] == 12


def test_the_engine_answers_concurrent_questions_in_rows(demo_model_dir) -> None:
    from core.serving.engine import load_engine
    from core.settings import load_settings

    engine = load_engine(load_settings(model=str(demo_model_dir), device="cpu", fast_decode_rows=4))
    assert engine.backend.batcher is not None and engine.backend.max_in_flight == 4
    image = engine.prepare_image(encode(Image.new("RGB", (120, 90), "orange"), "PNG"))
    alone = {q: engine.ask([image], q, engine.default_generation(max_new_tokens=NEW)).collect().text for q in QUESTIONS}
    start = threading.Barrier(len(QUESTIONS))
    together: dict[str, str] = {}

    def ask(question: str) -> None:
        start.wait()
        together[question] = engine.ask([image], question, engine.default_generation(max_new_tokens=NEW)).collect().text

    threads = [threading.Thread(target=ask, args=(q,)) for q in QUESTIONS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert together == alone



def test_no_question_compiles_after_the_warm_up(loaded) -> None:
    """Compiled as on a GPU (Inductor, on the CPU here): after warm_up, one answer, Compare's rows and the
    continuous batcher's rows replay the steps compiled while loading; a recompile (another input shape, such
    as a [rows, 1] penalty) would put compilation into an analyst's question."""
    from torch._dynamo.utils import counters

    from core.models.fast_decode_rows import generate_rows

    model, prompts, references = loaded
    fast = FastDecoder(model, 256, compile=True, rows=2)
    try:
        fast.warm_up()
        compiled = counters["stats"]["unique_graphs"]
        assert torch.equal(fast.generate(prompts[0], NEW, 1.005, set()), references[0])
        rows = generate_rows(fast, prompts[:2], NEW, 1.005, set())
        assert [list(r.new_ids) for r in rows] == [ref[0, -NEW:].tolist() for ref in references[:2]]
        batcher = ContinuousBatcher(fast)
        alone = batcher.submit(prompts[2], NEW, 1.005, set())  # the one-row step
        assert torch.equal(batcher.wait(alone), references[2])
        requests = [batcher.submit(p, NEW, 1.005, set()) for p in prompts[:2]]
        assert all(torch.equal(batcher.wait(r), ref) for r, ref in zip(requests, references))
        assert counters["stats"]["unique_graphs"] == compiled
    finally:
        fast.close()
