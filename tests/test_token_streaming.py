"""The local models' streamer hands text to its reader at most a few dozen times a second (issue #17 item 1):
text finalised sooner after the last hand-over is held and goes with the next one, the first text at once,
everything at the end. The reader then wakes per hand-over, not per token."""
from __future__ import annotations

import queue
import threading
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from core.backends.streaming import AnswerStream, GenerationThread
from core.backends.token_streaming import TimedStreamer

WORDS = " The quick brown fox jumps over the lazy dog and keeps running across the field"


@pytest.fixture(scope="module")
def tokenizer(demo_model_dir: Path):
    return AutoTokenizer.from_pretrained(demo_model_dir, local_files_only=True)


def queued(streamer: TimedStreamer) -> list[object]:
    items = []
    while True:
        try:
            items.append(streamer.text_queue.get_nowait())
        except queue.Empty:
            return items


def new_streamer(tokenizer, **interval: float) -> TimedStreamer:
    streamer = TimedStreamer(tokenizer, timeout_s=5.0, **interval)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt, which the streamer skips (as generate() sends it)
    return streamer


def put_tokens(streamer: TimedStreamer, ids: list[int]) -> None:
    for token in ids:  # as a decoder does: one token at a time
        streamer.put(torch.tensor([token]))


def test_tokens_within_one_interval_reach_the_reader_as_one_hand_over(tokenizer) -> None:
    ids = tokenizer(WORDS, add_special_tokens=False)["input_ids"]
    assert len(ids) > 10
    streamer = new_streamer(tokenizer, hand_over_every_s=3600.0)
    put_tokens(streamer, ids[:-3])
    first = queued(streamer)
    assert len(first) == 1 and first[0]  # the first text went at once; the rest is held (within the hour)
    put_tokens(streamer, ids[-3:])
    assert queued(streamer) == []
    streamer.end()
    rest = queued(streamer)
    assert rest[-1] is streamer.stop_signal and len(rest) == 2  # one hand-over of everything held, then the end
    assert first[0] + rest[0] == tokenizer.decode(ids, skip_special_tokens=True)


def test_without_an_interval_every_finalised_piece_is_handed_over(tokenizer) -> None:
    ids = tokenizer(WORDS, add_special_tokens=False)["input_ids"]
    streamer = new_streamer(tokenizer, hand_over_every_s=0.0)
    put_tokens(streamer, ids)
    streamer.end()
    pieces = queued(streamer)
    assert len(pieces) > 5 and pieces[-1] is streamer.stop_signal
    assert "".join(pieces[:-1]) == tokenizer.decode(ids, skip_special_tokens=True)


def test_the_reader_gets_the_whole_text_and_its_end(tokenizer) -> None:
    ids = tokenizer(WORDS, add_special_tokens=False)["input_ids"]
    streamer = new_streamer(tokenizer)
    thread = GenerationThread(lambda: put_tokens(streamer, ids), streamer).start()
    stream = AnswerStream(thread, threading.Event(), lambda _thread: None)
    assert "".join(stream) == tokenizer.decode(ids, skip_special_tokens=True)


def test_chinese_english_and_new_lines_stream_token_by_token_as_decoded(tokenizer) -> None:
    """A fast tokenizer's text comes from its incremental decoder (tokenizers' DecodeStream): every token's
    piece as it completes, the whole equal to decoding the ids at once."""
    text = "图中表格的合计是多少？ The total is 42.\n第二行：完成 (done)."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    streamer = new_streamer(tokenizer, hand_over_every_s=0.0)
    pieces = []
    for token in ids:
        streamer.put(torch.tensor([token]))
        pieces.extend(queued(streamer))
    streamer.end()
    assert queued(streamer) == [streamer.stop_signal]
    assert len(pieces) >= len(text) // 4  # piece by piece, not held back until a space
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True) == text
