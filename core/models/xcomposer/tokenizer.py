"""The folder's sentencepiece tokenizer, read directly (no transformers tokenizer class, no remote code).

It tokenizes as InternLM2's own (slow) tokenizer does: the text is first split at every special token
the folder declares (bos/eos/unk/pad and `added_tokens_decoder` in tokenizer_config.json, honouring each
one's lstrip/rstrip), each special token becomes its own id, and every other piece goes through
sentencepiece on its own. `encode(text, bos=True)` puts BOS in front, as the tokenizer's
add_special_tokens does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ModelError

END_OF_TURN = "[UNUSED_TOKEN_145]"
START_OF_TURN = "[UNUSED_TOKEN_146]"


@dataclass(frozen=True)
class SpecialToken:
    """A token the tokenizer never splits, and whether it eats the whitespace beside it."""

    text: str
    token_id: int
    lstrip: bool = False
    rstrip: bool = False


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from None
    return found if isinstance(found, dict) else {}


def _content(value: object) -> str | None:
    if isinstance(value, dict):
        text = value.get("content")
        return text if isinstance(text, str) else None
    return value if isinstance(value, str) else None


class XComposerTokenizer:
    """tokenizer.model + the special tokens of tokenizer_config.json / special_tokens_map.json."""

    def __init__(self, folder: Path) -> None:
        import sentencepiece

        model_file = folder / "tokenizer.model"
        if not model_file.is_file():
            raise ModelError(f"{folder} has no tokenizer.model (the sentencepiece model XComposer2.5 ships).")
        self.sp = sentencepiece.SentencePieceProcessor()
        self.sp.Load(str(model_file))
        self.vocab_size = int(self.sp.get_piece_size())
        self.bos_id = int(self.sp.bos_id())
        self.eos_id = int(self.sp.eos_id())
        self.special = self._special_tokens(folder)
        self._by_text = {token.text: token for token in self.special}
        self.special_ids = frozenset(token.token_id for token in self.special)
        end = self.token_id(END_OF_TURN)
        self.stop_ids = frozenset(i for i in (self.eos_id, end) if i is not None and i >= 0)

    def _special_tokens(self, folder: Path) -> tuple[SpecialToken, ...]:
        config = _read_json(folder / "tokenizer_config.json")
        names = {**_read_json(folder / "special_tokens_map.json"), **config}
        found: dict[str, SpecialToken] = {}
        for key, value in (config.get("added_tokens_decoder") or {}).items():
            text = _content(value)
            if text and isinstance(value, dict):
                found[text] = SpecialToken(text, int(key), bool(value.get("lstrip")), bool(value.get("rstrip")))
        defaults = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"}
        extra = [_content(v) for v in names.get("additional_special_tokens") or []]
        for text in [_content(names.get(key, default)) for key, default in defaults.items()] + extra:
            if text and text not in found:
                piece = self.sp.piece_to_id(text)
                if piece != self.sp.unk_id() or text == self.sp.id_to_piece(self.sp.unk_id()):
                    found[text] = SpecialToken(text, int(piece))
        return tuple(found.values())

    def token_id(self, text: str) -> int | None:
        token = self._by_text.get(text) if hasattr(self, "_by_text") else None
        if token is not None:
            return token.token_id
        piece = int(self.sp.piece_to_id(text))
        return None if piece == self.sp.unk_id() else piece

    def _split(self, text: str) -> list[str | SpecialToken]:
        """Text cut at special tokens, leftmost first and the longest where several start at one place."""
        parts: list[str | SpecialToken] = []
        ordered = sorted(self.special, key=lambda t: -len(t.text))
        start = 0
        while start < len(text):
            hits = [(text.find(t.text, start), t) for t in ordered]
            hits = [(at, t) for at, t in hits if at >= 0]
            if not hits:
                break
            at, token = min(hits, key=lambda hit: hit[0])  # min keeps the first (longest) of equal starts
            parts.append(text[start:at])
            parts.append(token)
            start = at + len(token.text)
        parts.append(text[start:])
        for i, part in enumerate(parts):  # whitespace a special token eats on either side
            if isinstance(part, SpecialToken):
                if part.lstrip and i > 0 and isinstance(parts[i - 1], str):
                    parts[i - 1] = str(parts[i - 1]).rstrip()
                if part.rstrip and i + 1 < len(parts) and isinstance(parts[i + 1], str):
                    parts[i + 1] = str(parts[i + 1]).lstrip()
        return [p for p in parts if not (isinstance(p, str) and p == "")]

    def encode(self, text: str, *, bos: bool) -> list[int]:
        ids = [self.bos_id] if bos else []
        for part in self._split(text):
            if isinstance(part, SpecialToken):
                ids.append(part.token_id)
            else:
                ids.extend(int(i) for i in self.sp.encode(part))
        return ids

    def decode(self, ids: list[int], **_options: object) -> str:
        """Text of generated ids without the special tokens and the stop tokens, as the model's chat() gives
        it (it skips special tokens and cuts at the end-of-turn marker, where generation stops anyway; a
        turn-start marker the folder does not declare special stays in the text there, and here).
        `_options`: what transformers' streamers pass."""
        hidden = self.special_ids | self.stop_ids
        return str(self.sp.decode([int(i) for i in ids if i not in hidden and 0 <= i < self.vocab_size]))
