"""The chat prompt as XComposer2.5's chat() writes it, cut into text pieces and image slots.

- Turns: `[UNUSED_TOKEN_146]user\n{q}[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n{a}[UNUSED_TOKEN_145]\n` for
  each earlier turn, then the question's turn and an open assistant turn. No system turn unless one is given
  (chat()'s use_meta=False).
- Images: one `<ImageHere>` per image, in the order given. A question that already holds markers keeps them
  where they are; one image and no marker goes in front of the whole prompt (as chat() does); several
  images without markers get one marker each in front of the question (chat() would use only the first).
- BOS: with images, the first text piece (empty when the image leads) is tokenized with BOS and the rest
  without. With no image the model's own chat(image=None) writes `<s>` into the text AND lets the tokenizer
  add one: the prompt starts with two BOS tokens, and so does Loupe's. (chat(image=[]) instead takes the
  image path with no image: one BOS; `as_image_list=True` reproduces that.)
"""
from __future__ import annotations

from dataclasses import dataclass

from core.errors import QuestionError
from core.models.xcomposer.tokenizer import END_OF_TURN, START_OF_TURN, XComposerTokenizer

IMAGE_MARKER = "<ImageHere>"


@dataclass(frozen=True)
class PromptPieces:
    """The prompt's token ids between image slots: len(texts) == images + 1 (a piece may be empty)."""

    texts: tuple[tuple[int, ...], ...]
    images: int

    @property
    def text_tokens(self) -> int:
        return sum(len(piece) for piece in self.texts)


def chat_text(question: str, history: tuple[tuple[str, str], ...] = (), system: str = "") -> str:
    """The whole prompt text with turn markers (no BOS, no image markers added)."""
    prompt = f"{START_OF_TURN}system\n{system}{END_OF_TURN}\n" if system else ""
    for asked, answered in history:
        prompt += f"{START_OF_TURN}user\n{asked}{END_OF_TURN}\n{START_OF_TURN}assistant\n{answered}{END_OF_TURN}\n"
    return prompt + f"{START_OF_TURN}user\n{question}{END_OF_TURN}\n{START_OF_TURN}assistant\n"


def with_markers(question: str, images: int) -> str:
    """The question with one image marker per image (see the module docstring)."""
    found = question.count(IMAGE_MARKER)
    if found == images or images <= 1:
        if found > images:
            raise QuestionError(f"The question has {found} {IMAGE_MARKER} markers but {images} image(s) came with it.")
        return question
    if found:
        raise QuestionError(f"The question has {found} {IMAGE_MARKER} markers for {images} images: "
                            "put one marker per image, or none to have the images in front in the order given.")
    return IMAGE_MARKER * images + question


def build_pieces(tokenizer: XComposerTokenizer, question: str, images: int,
                 history: tuple[tuple[str, str], ...] = (), system: str = "", *,
                 as_image_list: bool = False) -> PromptPieces:
    """Token ids of the prompt around its image slots, with chat()'s BOS rules."""
    text = chat_text(with_markers(question, images), history, system)
    if images == 0 and not as_image_list:
        if IMAGE_MARKER in text:
            raise QuestionError(f"The question has an {IMAGE_MARKER} marker but no image came with it.")
        return PromptPieces((tuple(tokenizer.encode("<s>" + text, bos=True)),), 0)
    if images == 1 and IMAGE_MARKER not in text:
        text = IMAGE_MARKER + text
    parts = text.split(IMAGE_MARKER)
    texts = [tuple(tokenizer.encode(part, bos=number == 0)) if (number == 0 or part) else ()
             for number, part in enumerate(parts)]
    return PromptPieces(tuple(texts), images)
