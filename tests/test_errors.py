"""Loupe's typed errors: a recorded error type name tells a refusal (shown as written) from a bug."""
from core import errors


def test_every_loupe_error_is_a_refusal_however_deep() -> None:
    assert errors.is_refusal("LoupeError") and errors.is_refusal("QuestionError")
    assert errors.is_refusal("AdmissionError")  # LoupeError → QuestionError → AdmissionError
    assert errors.is_refusal("ModelUnloadingError") and errors.is_refusal("PreflightError")


def test_anything_else_is_not() -> None:
    assert not errors.is_refusal("RuntimeError") and not errors.is_refusal("KeyError")
    assert not errors.is_refusal("") and not errors.is_refusal("questionerror")
