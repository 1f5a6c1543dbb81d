"""From a question and images to the model's token ids: encoding on the CPU (tokens + HD pixels, what
admission counts), the prompt's embeddings (vision runs here), and greedy/sampled generation through
transformers' generate() on the decoder, with the image mask set for the prompt's forward."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from core.models.xcomposer.hd_transform import hd_grid, hd_num_for, hd_pixels
from core.models.xcomposer.model import XComposerModel
from core.models.xcomposer.prompt import PromptPieces, build_pieces
from core.models.xcomposer.tokenizer import XComposerTokenizer


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity, never tensor by tensor
class XComposerInputs:
    """One prompt, encoded on the CPU: its token pieces, each image's HD pixels, and the counts."""

    pieces: PromptPieces
    pixels: tuple[torch.Tensor, ...]
    image_tokens: tuple[int, ...]
    prompt_as_ids: bool  # chat(image=None): the prompt goes to generate() as ids (see penalised_ids)

    @property
    def prompt_tokens(self) -> int:
        return self.pieces.text_tokens + sum(self.image_tokens)

    def penalised_ids(self) -> torch.Tensor:
        """The ids generate() sees as the prompt: the whole prompt when it goes as ids (no image); nothing
        otherwise, since the model's chat() then passes only embeddings (its repetition penalty then sees
        only new tokens)."""
        ids = self.pieces.texts[0] if self.prompt_as_ids else ()
        return torch.tensor([ids], dtype=torch.long).reshape(1, -1)


def encode(tokenizer: XComposerTokenizer, question: str, images: list[Image.Image],
           history: tuple[tuple[str, str], ...] = (), system: str = "", *, as_image_list: bool = False,
           ) -> XComposerInputs:
    """The prompt as chat(image=None) (no images) or chat(image=[...]) builds it; `as_image_list` makes an
    imageless prompt as chat(image=[]) does (one BOS, embeddings)."""
    pieces = build_pieces(tokenizer, question, len(images), history, system, as_image_list=as_image_list)
    hd_num = hd_num_for(len(images))
    pixels = tuple(hd_pixels(image, hd_num) for image in images)
    counts = tuple(hd_grid(image.width, image.height, hd_num).image_tokens for image in images)
    return XComposerInputs(pieces, pixels, counts, prompt_as_ids=not images and not as_image_list)


def image_embeds(model: XComposerModel, inputs: XComposerInputs) -> list[torch.Tensor]:
    """Each image's decoder embeddings (vision runs here: one call of the image encoder for all of them)."""
    return model.image_encoder(list(inputs.pixels)) if inputs.pixels else []


@torch.no_grad()
def prompt_embeds(model: XComposerModel, inputs: XComposerInputs,
                  images: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[1, T, hidden] embeddings of the prompt and its [1, T] image mask; `images`: its images' embeddings
    when already known (several prompts about the same images)."""
    device = model.embed_device
    embed = model.decoder.model.embed_tokens
    images = image_embeds(model, inputs) if images is None else images
    parts, mask = [], []
    for number, ids in enumerate(inputs.pieces.texts):
        if ids:
            parts.append(embed(torch.tensor([ids], dtype=torch.long, device=device)))
            mask.append(torch.zeros(len(ids), dtype=torch.bool))
        if number < len(images):
            parts.append(images[number].to(device=device, dtype=model.dtype))
            mask.append(torch.ones(images[number].shape[1], dtype=torch.bool))
    return torch.cat(parts, dim=1), torch.cat(mask)[None].to(device)


def generate_kwargs(model: XComposerModel, inputs: XComposerInputs, embeds: torch.Tensor) -> dict[str, Any]:
    """What the decoder's generate() takes for this prompt: ids without images (the prompt then counts for the
    repetition penalty, as in the model's own chat()), embeddings with them."""
    if inputs.prompt_as_ids:
        return {"input_ids": inputs.penalised_ids().to(model.embed_device)}
    return {"inputs_embeds": embeds, "attention_mask": torch.ones(embeds.shape[:2], dtype=torch.long,
                                                                   device=embeds.device)}


@torch.no_grad()
def generate(model: XComposerModel, inputs: XComposerInputs, stop_ids: set[int], *, first_logits: bool = False,
             **settings: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """New token ids ([1, n]) from transformers' generate() on the decoder, and with `first_logits` the first
    step's raw float32 logits ([vocab], before the repetition penalty); `settings` are generate()'s."""
    embeds, mask = prompt_embeds(model, inputs)
    kwargs = generate_kwargs(model, inputs, embeds)
    with model.image_positions.armed(mask):
        output = model.decoder.generate(**kwargs, eos_token_id=sorted(stop_ids), pad_token_id=model.spec.pad_id,
                                        return_dict_in_generate=True, output_logits=first_logits, **settings)
    ids = output.sequences
    ids = ids[:, kwargs["input_ids"].shape[1]:] if "input_ids" in kwargs else ids
    return ids, (output.logits[0][0].float() if first_logits else None)


@torch.no_grad()
def first_logits(model: XComposerModel, inputs: XComposerInputs) -> torch.Tensor:
    """The first step's logits ([vocab], float32) at the prompt's last position, from one forward."""
    embeds, mask = prompt_embeds(model, inputs)
    with model.image_positions.armed(mask):
        out = model.decoder(inputs_embeds=embeds, logits_to_keep=1)
    return out.logits[0, -1].float()


@torch.no_grad()
def row_inputs(model: XComposerModel, rows: list[XComposerInputs]) -> dict[str, torch.Tensor]:
    """Several prompts as one left-padded batch for generate() (the compare page): ids when the prompts go as
    ids, else embeddings with their image masks. Rows whose images are the same (the compare page's case)
    run the image encoder once."""
    device = model.embed_device
    pad = model.spec.pad_id
    if all(r.prompt_as_ids for r in rows):
        ids = [r.penalised_ids()[0] for r in rows]
        width = max(len(i) for i in ids)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for number, row_ids in enumerate(ids):
            input_ids[number, width - len(row_ids):] = row_ids
            attention[number, width - len(row_ids):] = 1
        return {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
    shared = all(len(r.pixels) == len(rows[0].pixels) and all(torch.equal(a, b) for a, b in zip(r.pixels, rows[0].pixels))
                 for r in rows[1:])
    first_images = image_embeds(model, rows[0])
    built = [prompt_embeds(model, r, first_images if number == 0 or shared else None) for number, r in enumerate(rows)]
    width = max(e.shape[1] for e, _ in built)
    filler = model.decoder.model.embed_tokens(torch.tensor([[pad]], device=device))
    embeds = filler.expand(len(rows), width, -1).clone()
    masks = torch.zeros((len(rows), width), dtype=torch.bool, device=device)
    attention = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for number, (row_embeds, row_mask) in enumerate(built):
        length = row_embeds.shape[1]
        embeds[number, width - length:] = row_embeds[0]
        masks[number, width - length:] = row_mask[0]
        attention[number, width - length:] = 1
    return {"inputs_embeds": embeds, "attention_mask": attention, "image_mask": masks}


@torch.no_grad()
def generate_rows(model: XComposerModel, rows: list[XComposerInputs], stop_ids: set[int],
                  **settings: Any) -> torch.Tensor:
    """New token ids ([rows, n], padded after each row's end) of several prompts in one generate() call."""
    batch = row_inputs(model, rows)
    mask = batch.pop("image_mask", None)
    with model.image_positions.armed(mask):
        output = model.decoder.generate(**batch, eos_token_id=sorted(stop_ids), pad_token_id=model.spec.pad_id,
                                        **settings)
    return output[:, batch["input_ids"].shape[1]:] if "input_ids" in batch else output
