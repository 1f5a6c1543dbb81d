"""Compare: batched answers equal single answers, one vision encoding, groups in history, re-runs, the diff."""
from __future__ import annotations

import html
import re

import pytest
from PIL import Image

from core.analysis import compare
from core.analysis.compare import CompareColumn
from core.analysis.word_diff import DiffPiece, diff_html, similarity, word_diff, words
from core.backends import batched_fast
from core.backends.stage_clocks import find_vision_module
from core.errors import HistoryError, QuestionError
from core.history import HistoryStore
from core.inputs.templates import by_id
from core.serving.recorded_ask import ImageUpload
from tests.image_factory import encode

PROMPTS = ("What is this?", "图中表格第三列第一行的数值是多少？请按从左到右的顺序列出四个图标名称。", "hi",
           "Describe the photo in one sentence, then list four colours you can see in it.")


def _png(colour: str = "navy", size: tuple[int, int] = (120, 90)) -> bytes:
    return encode(Image.new("RGB", size, colour), "PNG")


@pytest.fixture
def store(loupe_home) -> HistoryStore:
    return HistoryStore(loupe_home / "history.sqlite3")


@pytest.fixture(scope="module")
def rows_engine(demo_model_dir):
    """The demo model with 4 fast-path rows: Compare's greedy batches decode in them (core/backends/batched_fast.py)."""
    from core.serving.engine import load_engine
    from core.settings import load_settings

    loaded = load_engine(load_settings(home=demo_model_dir.parent.parent, model=str(demo_model_dir),
                                       fast_decode_rows=4))
    assert loaded.backend.fast_decoder.rows == 4
    return loaded


@pytest.fixture(params=["one generate() call", "fast path rows"])
def batch_engine(request, engine):
    """Both ways a batch is answered: one left-padded generate() call, and the fast path's rows."""
    return engine if request.param == "one generate() call" else request.getfixturevalue("rows_engine")


def _queries(engine, prompts=PROMPTS, tokens: int = 16, image: bytes | None = None):
    prepared = engine.prepare_image(image or _png())
    generation = engine.default_generation(max_new_tokens=tokens)
    return [engine.build_query([prepared], prompt, generation) for prompt in prompts]


def test_batched_answers_are_the_single_answers_token_for_token(batch_engine) -> None:
    queries = _queries(batch_engine)
    lengths = {len(batch_engine.backend.processor.tokenizer(q.question)["input_ids"]) for q in queries}
    assert len(lengths) == len(PROMPTS)  # different lengths: left padding is really exercised
    batched = batch_engine.backend.answer_batch(queries)
    assert len(batched) == len(queries)
    for query, (answer, ids) in zip(queries, batched, strict=True):
        alone_answer, alone_ids = batch_engine.backend.answer_batch([query])[0]
        streamed = batch_engine.ask(list(query.images), query.question, query.settings).collect()
        assert ids == alone_ids and len(ids) == 16
        assert answer.text == alone_answer.text == streamed.text
        assert answer.input_tokens == streamed.input_tokens  # pads are not counted
        assert answer.output_tokens == streamed.output_tokens == 16
        assert answer.truncated and streamed.truncated
        t = answer.timings
        assert t.vision > 0 and t.prefill > 0 and t.decode > 0 and t.total >= t.decode
        assert answer.tokens_per_s > 0


def test_the_image_is_processed_and_encoded_once_for_all_prompts(batch_engine, monkeypatch) -> None:
    seen: list[int] = []
    processed: list[int] = []
    image_processor = batch_engine.backend.processor.image_processor
    preprocess = type(image_processor).preprocess

    def counted(self, images, *args, **kwargs):
        processed.append(len(images) if isinstance(images, list) else 1)
        return preprocess(self, images, *args, **kwargs)

    monkeypatch.setattr(type(image_processor), "preprocess", counted)
    handle = find_vision_module(batch_engine.backend.model).register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].shape[0]))
    try:
        queries = _queries(batch_engine, tokens=4)
        batch_engine.backend.answer_batch(queries)
    finally:
        handle.remove()
    assert seen == [1]
    # one generate() call processes the rows' copies of the image in one call; the fast path's rows once
    on_rows = batched_fast.fits(batch_engine.backend.fast_decoder, queries)
    assert processed == ([1] if on_rows else [len(PROMPTS)])
    assert "get_image_features" not in vars(batch_engine.backend.model.model)  # the wrappers are gone afterwards
    assert "preprocess" not in vars(image_processor)


def test_a_row_that_ends_early_stops_there_and_keeps_its_own_decode_time(batch_engine, monkeypatch) -> None:
    queries = _queries(batch_engine, tokens=12)
    _, alone = batch_engine.backend.answer_batch([queries[1]])[0]
    stop = alone[4]  # make a token the second prompt produces the end-of-sequence token
    monkeypatch.setattr(batch_engine.backend.model.generation_config, "eos_token_id", stop)
    single_answer, single_ids = batch_engine.backend.answer_batch([queries[1]])[0]
    results = batch_engine.backend.answer_batch(queries)
    answer, ids = results[1]
    assert ids == single_ids and ids[-1] == stop and len(ids) == alone.index(stop) + 1
    assert not answer.truncated and answer.output_tokens == len(ids)
    for _, other_ids in results:
        assert stop not in other_ids[:-1]  # every row stops at its first end token, padding is never returned
    longest = max(results, key=lambda r: r[0].output_tokens)[0]
    assert answer.timings.decode <= longest.timings.decode


def test_rows_with_different_images_batch_too(batch_engine) -> None:
    generation = batch_engine.default_generation(max_new_tokens=8)
    queries = [batch_engine.build_query([batch_engine.prepare_image(_png(c))], "What colour?", generation)
               for c in ("navy", "orange", "white")]
    batched = [ids for _a, ids in batch_engine.backend.answer_batch(queries)]
    assert batched == [batch_engine.backend.answer_batch([q])[0][1] for q in queries]


def test_compare_records_one_group_and_reopens_it(engine, store) -> None:
    columns = [CompareColumn(f"P{i}", p) for i, p in enumerate(PROMPTS[:3])]
    seen = []
    run = compare.compare(engine, store, [ImageUpload(_png(), "navy.png")], columns,
                          generation=engine.default_generation(max_new_tokens=10), session_id="s1", on_cell=seen.append)
    assert len(run.cells) == 3 == len(seen) and all(c.batched for c in run.cells)
    assert [c.entry.question for c in run.cells] == list(PROMPTS[:3])
    assert all(c.entry.page == "compare" and c.entry.status == "answered" and c.entry.id for c in run.cells)
    assert all(c.entry.output_tokens == 10 and c.entry.truncated for c in run.cells)
    reopened = compare.load_group(store, run.group_id)
    assert [c.entry.answer for c in reopened.cells] == [c.entry.answer for c in run.cells]
    assert reopened.image_names == ("navy.png",) and [c.label for c in reopened.columns] == ["P0", "P1", "P2"]
    listed = compare.list_groups(store)
    assert listed[0].id == run.group_id and listed[0].columns == ("P0", "P1", "P2")
    assert listed[0].images == ("navy.png",) and listed[0].model == engine.describe().name
    with pytest.raises(HistoryError):
        compare.load_group(store, 999)


def test_batched_and_one_at_a_time_give_the_same_answers(engine, store, monkeypatch) -> None:
    columns = [CompareColumn(p[:8], p) for p in PROMPTS]
    generation = engine.default_generation(max_new_tokens=10)
    image = [ImageUpload(_png("teal"), "teal.png")]
    batched = compare.compare(engine, store, image, columns, generation=generation)
    monkeypatch.setattr(engine.backend, "can_batch", False)  # a backend that cannot batch: through the queue
    sequential = compare.compare(engine, store, image, columns, generation=generation)
    assert not any(c.batched for c in sequential.cells)
    assert [c.entry.answer for c in batched.cells] == [c.entry.answer for c in sequential.cells]


def test_rerun_asks_the_same_questions_on_other_images(engine, store) -> None:
    template = by_id("mod-checklist-en")
    columns = [compare.template_column(template), CompareColumn("free", "Is there a price tag?")]
    generation = engine.default_generation(max_new_tokens=8)
    first = compare.compare(engine, store, [ImageUpload(_png(), "a.png")], columns, generation=generation)
    assert first.cell(0, 0).entry.verdict  # a moderation template's answer gets a verdict (unparsed: noise)
    again = compare.rerun_group(engine, store, first.group_id)
    assert again.rerun_of == first.group_id and again.group_id != first.group_id
    assert [c.entry.answer for c in again.cells] == [c.entry.answer for c in first.cells]  # greedy: same answers
    grid = compare.rerun_group(engine, store, first.group_id,
                               images=[ImageUpload(_png("red"), "red.png"), ImageUpload(_png("lime"), "lime.png")])
    assert len(grid.cells) == 4 and grid.image_names == ("red.png", "lime.png")
    assert grid.cell(1, 0).entry.question == first.cell(0, 0).entry.question


def test_one_template_across_images_is_one_batched_call(engine, store) -> None:
    images = [ImageUpload(_png(c), f"{c}.png") for c in ("navy", "orange", "white")]
    run = compare.compare(engine, store, images, [CompareColumn("colour", "What colour is it?")],
                          generation=engine.default_generation(max_new_tokens=6))
    assert [(c.image_index, c.column_index) for c in run.cells] == [(0, 0), (1, 0), (2, 0)]
    assert all(c.batched for c in run.cells)


def test_a_bad_image_or_question_fails_only_its_own_cells(engine, store) -> None:
    images = [ImageUpload(b"not an image", "broken.png"), ImageUpload(_png(), "ok.png")]
    columns = [CompareColumn("ok", "What is this?"), CompareColumn("too long", "x" * 5000)]
    run = compare.compare(engine, store, images, columns, generation=engine.default_generation(max_new_tokens=4))
    assert [c.entry.status for c in run.cells] == ["failed", "failed", "answered", "failed"]
    assert run.cell(0, 0).entry.error_type == "ImageError" and "not an image" in run.cell(0, 0).entry.error
    assert run.cell(1, 1).entry.error_type == "QuestionError"
    assert compare.load_group(store, run.group_id).cell(1, 0).entry.answer == run.cell(1, 0).entry.answer


@pytest.mark.parametrize("images, columns", [(1, 1), (1, 7), (7, 1), (0, 2)])
def test_comparison_shape_is_checked(images: int, columns: int) -> None:
    with pytest.raises(QuestionError):
        compare.check_shape(images, columns)


def test_word_diff_is_word_level_and_safe_to_render() -> None:
    first, second = "The price is <b>39.9</b> yuan.", "The price is <script>alert(1)</script> 49.9 yuan!"
    pieces = word_diff(first, second)
    assert "".join(p.text for p in pieces if p.kind != "added") == first
    assert "".join(p.text for p in pieces if p.kind != "removed") == second
    rendered = diff_html(pieces)
    markup_left = re.sub(r"</?(?:del|ins|div)\b[^>]*>", "", rendered)
    assert "<" not in markup_left and ">" not in markup_left  # only Loupe's own tags are markup
    assert "alert(1)</script>" in html.unescape(markup_left)  # the text survives, as text
    assert "<del" in rendered and "<ins" in rendered
    assert any(p.kind == "same" and "The price is" in p.text for p in pieces)


def test_chinese_is_diffed_character_by_character() -> None:
    assert words("价格是39.9元") == ["价", "格", "是", "39", ".", "9", "元"]
    pieces = word_diff("价格是39.9元", "价格是49.9元")
    assert [p for p in pieces if p.kind != "same"] == [DiffPiece("removed", "39"),
                                                       DiffPiece("added", "49")]
    assert similarity("a b c", "a b c") == 1.0 and similarity("", "x y") == 0.0
