"""Earlier turns of a conversation (Query.history): the --history file, the demo model's prompt, refusals."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from core.backends.openai_remote import OpenAIRemoteBackend
from core.errors import QuestionError
from core.inputs import conversation, questions
from core.records import Turn
from tests.image_factory import encode

TURNS = [["What colour is the square?", "It is red."], ["图中有几个人？", "两个人。"]]


def _query(engine, *, history: tuple[Turn, ...] = (), images: int = 1):
    photo = encode(Image.new("RGB", (48, 32), "teal"), "PNG")
    query = engine.build_query([photo] * images, "And the background?", engine.default_generation(max_new_tokens=8))
    return dataclasses.replace(query, history=history)


def test_a_history_file_is_a_list_of_question_answer_pairs(tmp_path: Path) -> None:
    path = tmp_path / "turns.json"
    path.write_text(json.dumps(TURNS, ensure_ascii=False), encoding="utf-8")
    assert conversation.read_history_file(path) == (Turn("What colour is the square?", "It is red."),
                                                    Turn("图中有几个人？", "两个人。"))
    assert conversation.read_history_file_text("[]", "empty.json") == ()


@pytest.mark.parametrize(("text", "phrase"), [
    ("{not json", "is not valid JSON"),
    ('{"q": "a"}', "must be a JSON list of [question, answer] pairs"),
    ('[["only a question"]]', "turn 1 is not a [question, answer] pair"),
    ('[["q", "a"], ["q", 3]]', "turn 2 is not a [question, answer] pair"),
    ('[["  ", "a"]]', "turn 1 has an empty question"),
])
def test_a_malformed_history_file_is_refused_with_its_fault(text: str, phrase: str) -> None:
    with pytest.raises(QuestionError, match=r"^The history file turns\.json[: ]") as refused:
        conversation.read_history_file_text(text, "turns.json")
    assert phrase in str(refused.value) and "\n" not in str(refused.value)


def test_a_missing_history_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(QuestionError, match="No history file at"):
        conversation.read_history_file(tmp_path / "nowhere.json")


def test_earlier_turns_grow_the_demo_models_prompt(engine) -> None:
    backend = engine.backend
    assert backend.takes_history and not backend.takes_video
    alone = backend.encode(_query(engine))
    history = tuple(Turn(q, a) for q, a in TURNS)
    with_turns = backend.encode(_query(engine, history=history))
    assert with_turns.prompt_tokens > alone.prompt_tokens
    assert with_turns.image_tokens == alone.image_tokens == 16  # the image stays in the turn that has it
    prompt = backend.processor.tokenizer.decode(with_turns.inputs["input_ids"][0])
    for question, answer in TURNS:
        assert question in prompt and answer in prompt
    assert prompt.index("It is red.") < prompt.index("两个人。") < prompt.index("And the background?")
    # The answer's input_tokens are the encoding's: generation ran on the prompt with the turns.
    one = engine.stream(_query(engine)).collect()
    two = engine.stream(_query(engine, history=history)).collect()
    assert two.input_tokens == with_turns.prompt_tokens and one.input_tokens == alone.prompt_tokens


def test_no_image_with_history_builds_a_text_only_prompt(engine) -> None:
    query = dataclasses.replace(_query(engine, images=0), history=(Turn("Hi", "Hello."),))
    encoded = engine.backend.encode(query)
    assert encoded.image_tokens == 0 and encoded.prompt_tokens > 0
    assert engine.stream(query).collect().output_tokens > 0


def test_a_backend_that_cannot_take_history_refuses_it_in_one_line(engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine.backend, "takes_history", False)
    with pytest.raises(QuestionError) as refused:
        engine.backend.encode(_query(engine, history=(Turn("q", "a"),)))
    message = str(refused.value)
    assert message.startswith("The transformers backend cannot take earlier turns") and "\n" not in message
    engine.backend.encode(_query(engine))  # without turns it still answers


def test_the_remote_backend_sends_earlier_turns_as_earlier_messages(engine) -> None:
    remote = OpenAIRemoteBackend("http://127.0.0.1:9/v1", model="m")
    assert remote.takes_history and not remote.takes_video
    body = remote.encode(_query(engine, history=tuple(Turn(q, a) for q, a in TURNS))).inputs.fields  # OpenAI's fields
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert body["messages"][0]["content"] == "What colour is the square?"
    assert body["messages"][3]["content"] == "两个人。"
    last = body["messages"][-1]["content"]
    assert [part["type"] for part in last] == ["image_url", "text"] and last[-1]["text"] == "And the background?"
    plain = remote.encode(_query(engine)).inputs.fields
    assert [m["role"] for m in plain["messages"]] == ["user"]


def test_build_query_takes_the_history(engine) -> None:
    query = questions.build_query([], "Why?", history=(Turn("q", "a"),))
    assert query.history == (Turn("q", "a"),) and query.images == ()
