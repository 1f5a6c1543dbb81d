"""The shared queue on the real demo model: bursts from several sessions, fairness, cancel, OOM recovery,
admission and memory that comes back. A forward hook on the real vision tower holds the worker on a first
question where a test needs the queue to fill up deterministically (no sleeps)."""
from __future__ import annotations

import gc
import threading
import time
import weakref

import psutil
import pytest
import torch
from PIL import Image

from core.backends.stage_clocks import find_vision_module
from core.errors import AdmissionError, GenerationError
from core.models.memory_model import Geometry, kv_cache_bytes
from core.records import GenerationSettings
from core.serving import admission
from core.serving.admission import ModelMemorySpec
from core.serving.engine import Engine
from core.serving.scheduler import Scheduler, close_scheduler_for, describe_position, scheduler_for
from core.statuses import RequestStatus
from tests.image_factory import encode

SHORT = GenerationSettings(max_new_tokens=6)


def _png(colour: str = "navy") -> bytes:
    return encode(Image.new("RGB", (96, 64), colour), "PNG")


@pytest.fixture(scope="module")
def engine(demo_model_dir):
    """The demo model answering one question at a time (fast_decode_rows = 1): these tests are about the queue
    in front of such a model. Questions decoding together in rows: tests/test_continuous_batching.py."""
    from core.serving.engine import load_engine
    from core.settings import load_settings

    loaded = load_engine(load_settings(home=demo_model_dir.parent.parent, model=str(demo_model_dir),
                                       fast_decode_rows=1))
    assert loaded.backend.max_in_flight == 1
    return loaded


@pytest.fixture()
def scheduler(engine):
    sched = Scheduler(engine.backend)
    finished = []
    sched.add_listener(finished.append)
    sched.finished = finished  # type: ignore[attr-defined]
    yield sched
    sched.close()


class Gate:
    """Holds the first vision forward pass until released, so the queue behind it can be inspected."""

    def __init__(self, engine) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self._handle = find_vision_module(engine.backend.model).register_forward_hook(self._hook)

    def _hook(self, *_):
        self.entered.set()
        self.release.wait(60)

    def open(self) -> None:
        self.release.set()
        self._handle.remove()


def test_three_sessions_within_three_seconds_all_answered(engine, scheduler) -> None:
    """The reported failure: three submissions within three seconds from three sessions."""
    barrier = threading.Barrier(3)
    tickets, submitted_at = {}, {}

    def analyst(name: str) -> None:
        barrier.wait()
        submitted_at[name] = time.monotonic()
        tickets[name] = scheduler.submit(engine.build_query([_png()], f"What does {name} see?", SHORT), session=name)

    threads = [threading.Thread(target=analyst, args=(f"analyst-{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert max(submitted_at.values()) - min(submitted_at.values()) < 3
    answers = {name: ticket.collect() for name, ticket in tickets.items()}
    assert all(a.output_tokens == 6 and a.text for a in answers.values())
    assert sorted(r.status for r in scheduler.finished) == ["done"] * 3
    assert all(r.status is RequestStatus.DONE for r in scheduler.finished)  # the enum, not a bare string
    assert {r.session for r in scheduler.finished} == set(tickets)


def test_round_robin_positions_cancel_and_order(engine, scheduler) -> None:
    gate = Gate(engine)
    try:
        first = scheduler.submit(engine.build_query([_png()], "gate", SHORT), session="gate")
        assert gate.entered.wait(30)
        batch = [scheduler.submit(engine.build_query([_png()], f"a{i}", SHORT), session="A") for i in range(3)]
        single_b = scheduler.submit(engine.build_query([_png()], "b", SHORT), session="B")
        single_c = scheduler.submit(engine.build_query([_png()], "c", SHORT), session="C")
        # A's batch came first, but B and C each wait for at most one of A's questions.
        assert [t.ahead() for t in (batch[0], single_b, single_c, batch[1], batch[2])] == [1, 2, 3, 4, 5]
        assert first.ahead() is None and describe_position(first) == "answering" and first.wait_started(0)
        assert not batch[0].wait_started(0.01)
        assert describe_position(batch[0]) == "1 request ahead" and describe_position(single_c) == "3 requests ahead"
        assert scheduler.snapshot().waiting == 5 and scheduler.snapshot().running
        batch[1].cancel()
        assert batch[1].status == "cancelled" and batch[2].ahead() == 4
    finally:
        gate.open()
    for ticket in (first, batch[0], single_b, single_c, batch[2]):
        ticket.collect()
    with pytest.raises(GenerationError, match="cancelled before it started"):
        batch[1].collect()
    served = [r.query.question for r in scheduler.finished if r.status == "done"]
    assert served == ["gate", "a0", "b", "c", "a2"]
    assert scheduler.snapshot().waiting == 0


def test_cancel_running_stops_early(engine, scheduler) -> None:
    ticket = scheduler.submit(engine.build_query([_png()], "long", GenerationSettings(max_new_tokens=500)))
    for _ in ticket:
        ticket.cancel()
    assert ticket.answer is not None and ticket.answer.truncated and ticket.answer.output_tokens < 500


def test_caller_that_goes_away_cancels_its_work(engine, scheduler) -> None:
    gate = Gate(engine)
    try:
        first = scheduler.submit(engine.build_query([_png()], "gate", SHORT), session="gate")
        assert gate.entered.wait(30)
        dropped = scheduler.submit(engine.build_query([_png()], "dropped", SHORT), session="tab-1")
        with scheduler.submit(engine.build_query([_png()], "closed", SHORT), session="tab-2"):
            pass
        kept = [scheduler.submit(engine.build_query([_png()], f"tab3-{i}", SHORT), session="tab-3") for i in range(2)]
        del dropped
        gc.collect()
        assert scheduler.abandon_session("tab-3") == 2
        assert scheduler.snapshot().waiting == 0
    finally:
        gate.open()
    first.collect()
    statuses = {r.query.question: r.status for r in scheduler.finished}
    assert statuses == {"dropped": "cancelled", "closed": "cancelled", "tab3-0": "cancelled",
                        "tab3-1": "cancelled", "gate": "done"}
    assert all(t.status is RequestStatus.CANCELLED for t in kept)
    # A reader that stops mid-answer cancels the rest of it.
    ticket = scheduler.submit(engine.build_query([_png()], "abandon", GenerationSettings(max_new_tokens=400)))
    for _ in ticket:
        break
    assert ticket.wait(30) and ticket.answer is not None and ticket.answer.output_tokens < 400


def test_out_of_memory_is_reported_and_the_next_request_runs(engine, scheduler) -> None:
    """A real allocator failure inside generate(): that user gets a typed error, tensors are freed."""
    held: list[weakref.ref] = []

    def oversized_activation(*_):
        activation = torch.ones(16 * 2**20, dtype=torch.uint8)  # held by this frame when the next line fails
        held.append(weakref.ref(activation))
        torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: the host allocator refuses

    handle = find_vision_module(engine.backend.model).register_forward_hook(oversized_activation)
    try:
        failing = scheduler.submit(engine.build_query([_png()], "too big", SHORT), session="a")
        with pytest.raises(GenerationError, match="ran out of memory") as caught:
            failing.collect()
    finally:
        handle.remove()
    assert caught.value.__traceback__ is not None  # re-raised to the reader, but the scheduler kept none
    assert held and held[0]() is None, "the failed request's tensors must be freed"
    assert failing.status == "failed" and scheduler.finished[-1].error_type == "OutOfMemoryError"
    assert scheduler.submit(engine.build_query([_png()], "next", SHORT), session="b").collect().output_tokens == 6


def test_fifty_sequential_requests_do_not_grow_memory(engine, scheduler) -> None:
    process = psutil.Process()
    query = engine.build_query([_png()], "What is in the image?", GenerationSettings(max_new_tokens=8))
    for _ in range(5):  # warm-up: first calls allocate caches that stay
        scheduler.submit(query).collect()
    before = process.memory_info().rss
    for _ in range(50):
        scheduler.submit(query).collect()
    growth = process.memory_info().rss - before
    assert growth < 16 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 50 requests"


def test_admission_refuses_at_submit_with_what_to_reduce(engine) -> None:
    adm = admission.for_backend(engine.backend)
    small = engine.build_query([_png()], "hi", SHORT)
    big = engine.build_query([_png()] * 4, "hi", GenerationSettings(max_new_tokens=8192, num_beams=3))
    need_small, need_big = (adm.estimate(engine.backend.encode(q)).need_bytes["cpu"] for q in (small, big))
    assert need_big > need_small
    limit = (need_small + need_big) // 2

    class TightMemory(admission.Admission):
        def free(self) -> dict[str, int]:
            return {"cpu": limit}

    sched = Scheduler(engine.backend)
    sched._admission = TightMemory(engine.backend.model, engine.backend.processor.tokenizer)
    sched._idle_free = {"cpu": limit}
    try:
        with pytest.raises(AdmissionError, match="lower max new tokens \\(now 8192") as refused:
            sched.submit(big)
        assert "use 1 beam instead of 3" in str(refused.value) and "4 images" in str(refused.value)
        assert sched.submit(small).collect().output_tokens == 6
    finally:
        sched.close()


def test_kv_cache_formula_and_sharded_estimate() -> None:
    # InternLM2-7B (XComposer2.5's decoder): 32 layers, 8 KV heads of 128, bf16 → 128 KiB per token.
    assert kv_cache_bytes(32, 8, 128, 1, 1, 2) == 131072
    assert kv_cache_bytes(32, 8, 128, 4096, 2, 2) == 2 * 4096 * 131072
    spec = ModelMemorySpec(
        geometry=Geometry(hidden=4096, intermediate=14336, heads=32, kv_heads=8, head_dim=128, vocab=92544,
                          dtype_bytes=2, vision_hidden=1280, vision_intermediate=5120, vision_layers=32),
        layers=32, layers_by_device={"cuda:0": 16, "cuda:1": 16}, vision_device="cuda:0",
        head_device="cuda:1", image_tokens=0, image_tokens_several=0, vision_tokens=0, vision_tokens_several=0,
        patch_pixels=28 * 28, vision_tokens_per_image_token=4,
    )
    from core.records import PreparedImage, Query

    image = PreparedImage(Image.new("RGB", (1120, 560)), (), "PNG", (1120, 560), "", 0.0)
    query = Query((image,), "hi", GenerationSettings(max_new_tokens=4096))
    est = admission.estimate(query, spec, text_tokens=2)
    assert est.workload.image_tokens == 800 and est.workload.prompt_tokens == 800 + 2 + 64
    assert est.workload.vision_tokens == 4 * 800 and est.workload.batch == 1  # Qwen2-VL merges 2×2 patches
    kv_half = kv_cache_bytes(16, 8, 128, est.workload.context_tokens, 1, 2)
    assert est.need_bytes["cuda:0"] > kv_half * 1.2 and est.need_bytes["cuda:1"] > kv_half * 1.2
    assert est.need_bytes["cuda:0"] < 2 * 2**30  # about 0.6 GB of cache per GPU, not tens of GB
    message = admission.refusal(query, est, "cuda:1", 500_000_000)
    assert "on cuda:1, but only 0.50 GB is free there" in message and "now 4096" in message


def test_engine_submit_shares_one_scheduler_until_closed(engine) -> None:
    mine = Engine(backend=engine.backend, settings=engine.settings)
    shared = scheduler_for(mine)
    assert scheduler_for(mine) is shared
    assert mine.submit([_png()], "hi", SHORT, session="s").collect().output_tokens == 6
    assert shared.snapshot().waiting == 0
    close_scheduler_for(mine)  # what the dashboard does before backend.unload()
    assert shared._workers and not any(w.is_alive() for w in shared._workers)
    replacement = scheduler_for(mine)
    assert replacement is not shared
    assert mine.submit([_png()], "hi", SHORT).collect().output_tokens == 6
    workers = list(replacement._workers)
    assert len(workers) == 1  # a local model: one request at a time
    del mine
    gc.collect()  # a dropped engine closes its scheduler: its worker thread ends
    workers[0].join(30)
    assert not workers[0].is_alive()


def test_xcomposer_image_bounds_agree_with_the_planner() -> None:
    from core.models import model_shape
    from tests.model_configs import INTERNLM2_7B

    config = {"model_type": "internlmxcomposer2", **INTERNLM2_7B}

    class Config:  # what a loaded XComposer2.5 config offers admission: its model_type and to_dict()
        model_type = "internlmxcomposer2"

        def to_dict(self) -> dict:
            return config

    rules = admission._image_rules(Config())
    one = model_shape.xcomposer_image_tokens(560, 14, model_shape.XCOMPOSER_HD_NUM)
    each = model_shape.xcomposer_image_tokens(560, 14, model_shape.XCOMPOSER_MULTI_HD_NUM)
    assert rules["image_tokens"] == one[0] and rules["image_tokens_several"] == each[0]
    assert rules["vision_tokens"] == one[1] * (40 * 40 + 1) == 25 * 1601  # 24 crops + the global view
    assert rules["vision_tokens_several"] == each[1] * (40 * 40 + 1)


def test_admission_recognises_the_published_xcomposer_config() -> None:
    """A loaded model whose config is the published one (model_type "internlm2" + the XComposer class) is read
    with XComposer's rules: its crop-based image tokens and its InternLM2 geometry."""
    from core.models import model_shape
    from tests.model_configs import XCOMPOSER2D5_7B_CONFIG

    class Config:
        model_type = "internlm2"

        def to_dict(self) -> dict:
            return dict(XCOMPOSER2D5_7B_CONFIG)

    rules = admission._image_rules(Config())
    assert rules["image_tokens"] == model_shape.xcomposer_image_tokens(560, 14, 24)[0]
    assert rules["patch_pixels"] == 0
