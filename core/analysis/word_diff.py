"""A word-level diff of two answers, safe to render: each CJK character is a word (Chinese has no spaces).

Used by the Compare page to show how two columns' answers differ, and how much they share."""
from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORDS = re.compile(rf"\s+|[{_CJK}]|[^\W{_CJK}]+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class DiffPiece:
    """A run of words the two answers share ("same"), or that only the first ("removed") or second ("added") has."""

    kind: str
    text: str


def words(text: str) -> list[str]:
    """Words, whitespace runs and punctuation marks; each CJK character is a word (Chinese has no spaces)."""
    return _WORDS.findall(text)


def word_diff(first: str, second: str) -> list[DiffPiece]:
    """How `second` differs from `first`, word by word; joining the pieces' text gives back both sides."""
    a, b = words(first), words(second)
    pieces: list[DiffPiece] = []
    for op, i1, i2, j1, j2 in SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            pieces.append(DiffPiece("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            pieces.append(DiffPiece("removed", "".join(a[i1:i2])))
        if j2 > j1:
            pieces.append(DiffPiece("added", "".join(b[j1:j2])))
    return pieces


def diff_html(pieces: Sequence[DiffPiece]) -> str:
    """The diff as HTML safe to render: every piece escaped, removals in <del>, additions in <ins>."""
    tags = {"same": ("", ""), "removed": ('<del class="loupe-del" style="background:#ffd7d5">', "</del>"),
            "added": ('<ins class="loupe-ins" style="background:#ccffd8">', "</ins>")}
    body = "".join(f"{tags[p.kind][0]}{html.escape(p.text)}{tags[p.kind][1]}" for p in pieces)
    return f'<div class="loupe-diff" style="white-space: pre-wrap">{body}</div>'


def similarity(first: str, second: str) -> float:
    """Share of words the two answers have in common (difflib's ratio over words), 0..1."""
    return SequenceMatcher(None, words(first), words(second), autojunk=False).ratio()
