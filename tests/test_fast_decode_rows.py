"""The fast path's decode attentions and its rows (several prompts in one step) against plain generate() on the
real demo model (float32, CPU: token for token identical)."""
from __future__ import annotations

import pytest
from PIL import Image

from core.models.decode_attention import DecodeAttention
from core.models.fast_decode import FastDecoder
from core.models.fast_decode_rows import generate_rows
from tests.demo_prompts import demo_prompts
from tests.image_factory import encode

QUESTIONS = ("图中表格的合计是多少？", "What colour is this?", "Describe the picture in one long sentence, please.")
NEW = 48


@pytest.fixture(scope="module")
def loaded(demo_model_dir):
    demo = demo_prompts(demo_model_dir, QUESTIONS, NEW, fixed_length=False)
    lengths = [p["input_ids"].shape[1] for p in demo.prompts]
    assert len(set(lengths)) == 3  # three prompt lengths: rows at their own positions
    references = [ref[0, length:].tolist() for ref, length in zip(demo.references, lengths)]
    return demo.model, demo.processor, demo.prompts, references

@pytest.mark.parametrize("ahead", [False, True], ids=["read-then-launch", "launch-ahead"])
@pytest.mark.parametrize("kind", list(DecodeAttention))
def test_each_attention_gives_generates_ids(loaded, kind, ahead) -> None:
    model, processor, prompts, references = loaded
    fast = FastDecoder(model, 512, compile=False, attention=kind)
    fast.read_ahead = ahead  # the GPU's order (a step launched before the last is read), run on the CPU
    out = fast.generate(prompts[0], NEW, 1.005, {processor.tokenizer.eos_token_id})
    assert out[0, prompts[0]["input_ids"].shape[1]:].tolist() == references[0]


@pytest.mark.parametrize("ahead", [False, True], ids=["read-then-launch", "launch-ahead"])
@pytest.mark.parametrize("kind", list(DecodeAttention))
def test_rows_decoded_together_answer_as_each_prompt_alone(loaded, kind, ahead) -> None:
    model, processor, prompts, references = loaded
    fast = FastDecoder(model, 512, compile=False, rows=4, attention=kind)  # 3 prompts: one row carried idle
    fast.read_ahead = ahead
    answers = generate_rows(fast, prompts, NEW, 1.005, {processor.tokenizer.eos_token_id})
    assert [list(a.new_ids) for a in answers] == references
    # and a single answer on the same decoder (row 0 alone) after the batch is still the model's own
    out = fast.generate(prompts[1], NEW, 1.005, {processor.tokenizer.eos_token_id})
    assert out[0, prompts[1]["input_ids"].shape[1]:].tolist() == references[1]


def test_rows_through_loupes_gemvs_answer_as_each_prompt_alone(loaded) -> None:
    """Every projection of the rows' step through rows_gemv.py (under Triton's interpreter), the one-row step's
    through row_gemv.py, beside the split-KV kernel: each prompt's ids are its own, float32."""
    pytest.importorskip("triton")
    from core.models.decode_gemv import GemvKernel, Projection

    model, processor, prompts, references = loaded
    every = dict.fromkeys(Projection, GemvKernel.TRITON)
    fast = FastDecoder(model, 512, compile=False, rows=4, attention=DecodeAttention.SPLIT, gemv=every,
                       rows_gemv=every)
    answers = generate_rows(fast, prompts, NEW, 1.005, {processor.tokenizer.eos_token_id})
    assert [list(a.new_ids) for a in answers] == references
    fast.close()


def test_more_prompts_than_rows_is_refused(loaded) -> None:
    model, processor, prompts, _ = loaded
    fast = FastDecoder(model, 512, compile=False, rows=2)
    with pytest.raises(ValueError, match="3 prompts for a decoder of 2 rows"):
        generate_rows(fast, prompts, NEW, 1.005, set())


def _engine(demo_model_dir, **overrides):
    from core.serving.engine import load_engine
    from core.settings import load_settings

    return load_engine(load_settings(model=str(demo_model_dir), device="cpu", **overrides))


def _answer(engine, question: str = "What colour is this?") -> str:
    image = engine.prepare_image(encode(Image.new("RGB", (120, 90), "orange"), "PNG"))
    return engine.ask([image], question, engine.default_generation(max_new_tokens=24)).collect().text


def test_the_decode_attention_setting_reaches_the_fast_path_and_answers_the_same(demo_model_dir) -> None:
    flex, sdpa = _engine(demo_model_dir, decode_attention="flex", fast_decode_rows=4), _engine(demo_model_dir)
    assert flex.backend.fast_decoder.attention is DecodeAttention.FLEX and flex.backend.fast_decoder.rows == 4
    assert sdpa.backend.fast_decoder.attention is DecodeAttention.SDPA and sdpa.backend.fast_decoder.rows == 1
    assert sdpa.backend.batcher is None and sdpa.backend.max_in_flight == 1
    assert "flex attention, 4 rows" in " ".join(flex.backend.describe().notes)
    assert _answer(flex) == _answer(sdpa)


def test_a_fast_path_that_fails_to_build_leaves_the_model_answering(demo_model_dir, monkeypatch) -> None:
    # The failure is forced (a real one needs a GPU: a compile error, or no memory for the cache); the model,
    # its loading and its answer are real.
    def broken(self, report=None):
        raise RuntimeError("inductor could not compile the step")

    monkeypatch.setattr(FastDecoder, "warm_up", broken)
    engine = _engine(demo_model_dir)
    assert engine.backend.fast_decoder is None
    notes = " ".join(engine.backend.describe().notes)
    assert "off: it failed to build (RuntimeError: inductor could not compile the step); generate() answers" in notes
    assert _answer(engine)  # generate() answers


def test_auto_attention_is_the_split_kernel_only_where_the_step_is_compiled_on_a_gpu() -> None:
    assert DecodeAttention.AUTO.resolved(compiled_on_cuda=True) is DecodeAttention.SPLIT
    assert DecodeAttention.AUTO.resolved(compiled_on_cuda=False) is DecodeAttention.SDPA
    assert DecodeAttention.SDPA.resolved(compiled_on_cuda=True) is DecodeAttention.SDPA  # a choice is kept
    assert DecodeAttention.FLEX.resolved(compiled_on_cuda=False) is DecodeAttention.FLEX


def test_auto_falls_back_to_flex_when_the_split_kernel_fails_to_build(demo_model_dir, monkeypatch) -> None:
    """"auto" is the split-KV kernel on a GPU; where it cannot be built (another GPU or Triton), the decoder is
    built again with FlexAttention and the card says why. (The kernel's failure is forced: on a CPU, auto is
    sdpa; the model, the decoders and their warm-up are real, the kernel under Triton's interpreter.)"""
    pytest.importorskip("triton")
    from core.models import fast_decode_support, split_decode_attention

    def broken(*args, **kwargs):
        raise RuntimeError("the kernel did not compile")

    monkeypatch.setattr(split_decode_attention, "split_attend", broken)
    model = _engine(demo_model_dir, fast_decode=False).backend.model
    as_on_a_gpu = {DecodeAttention.AUTO: DecodeAttention.SPLIT}
    built: list[DecodeAttention] = []

    def make(attention: DecodeAttention) -> FastDecoder:
        built.append(attention)
        return FastDecoder(model, 64, compile=False, attention=as_on_a_gpu.get(attention, attention))

    decoder, card = fast_decode_support.build_and_warm(make, DecodeAttention.AUTO, "fast", lambda _m: None)
    assert built == [DecodeAttention.AUTO, DecodeAttention.FLEX]
    assert decoder is not None and decoder.attention is DecodeAttention.FLEX
    assert card.startswith("static KV cache, decode step not compiled (CPU), flex attention")
    assert card.endswith("; the split-KV kernel failed to build (RuntimeError: the kernel did not compile)")
    decoder.close()
    # Asked for by name, the kernel's failure is not papered over: generate() answers.
    built.clear()
    decoder, card = fast_decode_support.build_and_warm(make, DecodeAttention.SPLIT, "fast", lambda _m: None)
    assert decoder is None and built == [DecodeAttention.SPLIT]
    assert card == "off: it failed to build (RuntimeError: the kernel did not compile); generate() answers"
