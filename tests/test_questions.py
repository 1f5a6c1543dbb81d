"""Question validation counts Unicode characters and says how long and what the limit is."""
import pytest
from PIL import Image

from core.errors import QuestionError
from core.inputs import images, questions
from core.records import GenerationSettings
from core.settings import load_settings
from tests.image_factory import encode


def test_question_is_stripped() -> None:
    assert questions.validate("  图中有几个人？ \n") == "图中有几个人？"


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_question_is_refused(text: str) -> None:
    with pytest.raises(QuestionError, match="empty"):
        questions.validate(text)


def test_limit_counts_characters_not_bytes() -> None:
    exactly = "图" * 190 + "，。！？、；：“”（"  # 200 characters, 600 bytes in UTF-8
    assert len(exactly) == 200
    assert questions.validate(exactly) == exactly
    with pytest.raises(QuestionError, match="201 characters long; the limit is 200"):
        questions.validate(exactly + "？")


def test_limit_is_a_setting() -> None:
    with pytest.raises(QuestionError, match="the limit is 10"):
        questions.validate("a" * 11, max_chars=10)


def test_too_many_images() -> None:
    with pytest.raises(QuestionError, match="5 images were given; a question can carry at most 4"):
        questions.check_image_count(5)


@pytest.mark.parametrize(
    "bad", [{"num_beams": 4}, {"num_beams": 0}, {"max_new_tokens": 0}, {"temperature": 0}, {"top_p": 1.5}]
)
def test_generation_settings_are_checked(bad: dict) -> None:
    with pytest.raises(QuestionError):
        GenerationSettings(**bad)


def test_generation_defaults_match_the_reference_model() -> None:
    s = GenerationSettings()
    assert (s.max_new_tokens, s.do_sample, s.num_beams, s.repetition_penalty) == (1024, False, 1, 1.005)


def test_build_query_checks_before_it_decodes_anything() -> None:
    decoded: list[bytes] = []

    def prepare(data: bytes):
        decoded.append(data)
        raise AssertionError("a refused question must not be decoded")

    with pytest.raises(QuestionError, match="empty"):
        questions.build_query([b"image"], "  ", prepare=prepare)
    with pytest.raises(QuestionError, match="5 images were given"):
        questions.build_query([b"image"] * 5, "What is it?", prepare=prepare)
    assert decoded == []


def test_build_query_prepares_in_order_and_keeps_prepared_images() -> None:
    ready = images.prepare(encode(Image.new("RGB", (20, 10), "red"), "PNG"))
    other = encode(Image.new("RGB", (30, 10), "blue"), "PNG")
    query = questions.build_query([ready, other], "  Which is wider? ", GenerationSettings(max_new_tokens=3),
                                  prepare=images.prepare)
    assert query.images[0] is ready and query.images[1].width == 30
    assert query.question == "Which is wider?" and query.settings.max_new_tokens == 3


def test_build_query_needs_prepare_for_unprepared_images() -> None:
    with pytest.raises(TypeError, match="no `prepare`"):
        questions.build_query([b"bytes"], "What is it?")


def test_default_generation_is_the_settings_max_new_tokens_and_greedy() -> None:
    settings = load_settings(max_new_tokens=77)
    assert questions.default_generation(settings) == GenerationSettings(max_new_tokens=77)
    assert questions.default_generation(settings, num_beams=2) == GenerationSettings(max_new_tokens=77, num_beams=2)
