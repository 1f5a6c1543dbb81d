"""The fast decode path against plain generate() on the real demo model (float32, CPU: must be identical)."""
from __future__ import annotations

import threading

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from core.models.decode_gemv import GemvKernel, Projection
from core.models.fast_decode import FastDecoder
from core.models.fast_decode_support import cache_length, check


@pytest.fixture(scope="module")
def loaded(demo_model_dir):
    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir).eval()
    processor = AutoProcessor.from_pretrained(demo_model_dir)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "图中表格的合计是多少？"}]}],
        add_generation_prompt=True, tokenize=False,
    )
    inputs = processor(images=[Image.new("RGB", (120, 90), "orange")], text=prompt, return_tensors="pt")
    reference = model.generate(**inputs, max_new_tokens=160, do_sample=False, repetition_penalty=1.005)
    return model, processor, dict(inputs), reference


def test_greedy_ids_identical_to_generate_in_float32(loaded) -> None:
    model, processor, inputs, reference = loaded
    assert check(model).enabled
    fast = FastDecoder(model, 512, compile=False)
    out = fast.generate(inputs, 160, 1.005, {processor.tokenizer.eos_token_id})
    assert torch.equal(out, reference)
    # The model's own weights became views into the fused matrices: generate() is unchanged.
    again = model.generate(**inputs, max_new_tokens=160, do_sample=False, repetition_penalty=1.005)
    assert torch.equal(again, reference)


def test_projections_as_reductions_give_the_same_greedy_ids(loaded) -> None:
    """The one-row step's projections written as float32 sums (decode_gemv.py, as compiled on a GPU) answer
    as cuBLAS/MKL's GEMVs do: the same ids as generate() in float32, and logits within float32's rounding."""
    model, processor, inputs, reference = loaded
    every = dict.fromkeys(Projection, GemvKernel.REDUCTION)
    fast = FastDecoder(model, 512, compile=False, gemv=every)
    assert fast.gemv == every and FastDecoder(model, 512, compile=False).gemv == {}
    assert torch.equal(fast.generate(inputs, 160, 1.005, {processor.tokenizer.eos_token_id}), reference)
    plain = FastDecoder(model, 512, compile=False)
    with torch.no_grad():
        length = fast.prefill(inputs)
        plain.prefill(inputs)
        token, pos = reference[:, length], fast.positions[length : length + 1]
        got, want = fast.logits_at(token, pos), plain.logits_at(token, pos)
    assert float((got - want).norm() / want.norm()) < 1e-5


def test_teacher_forced_logits_agree(loaded) -> None:
    model, _processor, inputs, reference = loaded
    fast = FastDecoder(model, 512, compile=False)
    with torch.no_grad():
        full = dict(inputs, input_ids=reference, attention_mask=torch.ones_like(reference))
        ref_logits = model(**full).logits[0]
        length = fast.prefill(inputs)
        for pos in range(length, reference.shape[1] - 1):
            got = fast.logits_at(reference[:, pos], fast.positions[pos : pos + 1])
            assert float((got - ref_logits[pos]).norm() / ref_logits[pos].norm()) < 1e-4


def test_cache_is_reused_across_requests_of_different_lengths(loaded) -> None:
    model, processor, inputs, reference = loaded
    fast = FastDecoder(model, 512, compile=False)
    cache = [t.data_ptr() for t in (*fast.k_cache, *fast.v_cache)]
    short = fast.generate(inputs, 5, 1.005, set())
    long = fast.generate(inputs, 160, 1.005, {processor.tokenizer.eos_token_id})
    assert [t.data_ptr() for t in (*fast.k_cache, *fast.v_cache)] == cache
    assert torch.equal(long, reference) and torch.equal(short, reference[:, : short.shape[1]])


def test_prompt_longer_than_cache_is_refused(loaded) -> None:
    model, _processor, inputs, _reference = loaded
    with pytest.raises(ValueError, match="does not fit"):
        FastDecoder(model, 32, compile=False).generate(inputs, 10, 1.0, set())


def test_every_request_decodes_on_the_decoders_own_thread(loaded) -> None:
    """torch keeps CUDA graphs per thread: warm-up and every request, whichever thread asks (each answer has its
    own generation thread), must run on the one thread where the graphs were recorded."""
    model, _processor, inputs, reference = loaded
    fast = FastDecoder(model, 512, compile=False)
    ran_on: list[int] = []
    step = fast._step
    fast._step = lambda *args: (ran_on.append(threading.get_ident()), step(*args))[1]
    reported_on: list[int] = []
    fast.warm_up(lambda _message: reported_on.append(threading.get_ident()))
    assert reported_on and set(reported_on) == {threading.get_ident()}  # progress is drawn by the caller's thread
    results: list[torch.Tensor] = []
    callers = [threading.Thread(target=lambda: results.append(fast.generate(inputs, 20, 1.005, set()))) for _ in "ab"]
    for caller in callers:
        caller.start()
        caller.join()
    assert len(results) == 2 and all(torch.equal(r, reference[:, : r.shape[1]]) for r in results)
    assert len(set(ran_on)) == 1 and ran_on[0] not in {c.ident for c in callers} | {threading.get_ident()}
    nested = fast.on_own_thread(lambda: fast.generate(inputs, 20, 1.005, set()))  # already there: no deadlock
    assert torch.equal(nested, results[0]) and set(ran_on) == {ran_on[0]}
    fast.close()
    with pytest.raises(RuntimeError, match="shutdown"):
        fast.generate(inputs, 5, 1.0, set())


def test_cache_length_buckets() -> None:
    assert cache_length(4096, 1) == 512
    assert cache_length(4096, 1300) == 1536
    assert cache_length(1024, 5000) == 1024


def test_buckets_cover_the_cache_and_warm_up_leaves_answers_unchanged(loaded) -> None:
    model, processor, inputs, reference = loaded
    fast = FastDecoder(model, 512, compile=False, buckets=(64, 128))
    assert fast.buckets == (64, 128, 512)
    assert fast.bucket_for(1) == 64 and fast.bucket_for(65) == 128 and fast.bucket_for(300) == 512
    assert fast.warm_up() >= 0
    out = fast.generate(inputs, 160, 1.005, {processor.tokenizer.eos_token_id})  # crosses two buckets
    assert torch.equal(out, reference)


def test_compiled_step_writes_the_cache_in_place(demo_model_dir, monkeypatch) -> None:
    """The decode step as inductor compiles it for the dashboard (after its reinplacing pass): each layer's K/V
    write is one in-place index_put_, never a copy of the layer's whole cache and a copy back, which is what
    writing into a view of one big cache tensor compiled to (2 GB of extra traffic a token on a 7B model)."""
    from torch._inductor import config as inductor_config
    from torch._inductor.fx_passes import post_grad

    targets: list[str] = []
    reinplace = post_grad.reinplace_inplaceable_ops

    def recording(updater, graph) -> None:
        reinplace(updater, graph)
        targets.extend(str(node.target) for node in graph.nodes if node.op == "call_function")

    monkeypatch.setattr(post_grad, "reinplace_inplaceable_ops", recording)
    model = AutoModelForImageTextToText.from_pretrained(demo_model_dir).eval()
    eager = FastDecoder(model, 64, compile=False)
    fast = FastDecoder(model, 64, compile=True)  # as the backend builds it on a GPU: static addresses marked
    token, pos, penalty = torch.tensor([7]), torch.tensor([3]), torch.tensor(1.0)
    with inductor_config.patch(fx_graph_cache=False), torch.no_grad():  # compile for real: the pass must run
        assert torch.equal(fast._step(token, pos, penalty, 64), eager._decode_step(token, pos, penalty, 64))
    assert targets.count("aten.index_put_.default") == 2 * len(fast.layers) + 1  # K and V per layer, `seen`
    assert "aten.copy_.default" not in targets and "aten.index_put.default" not in targets
