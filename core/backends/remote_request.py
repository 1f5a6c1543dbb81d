"""A Loupe query as the chat-completions request an OpenAI-compatible engine takes (vLLM, LMDeploy, another
Loupe), built once at encode time (core/backends/openai_remote.py sends it through the openai client).

Decisions:
- Images travel as data URIs, JPEG at quality 95 by default (setting remote_image_format = "jpeg"; the
  1280x720 sample is about 277 KB of base64 instead of PNG's 955 KB) or PNG, lossless, so the remote model
  sees exactly what a local one would ("png"). The image is the prepared one (EXIF-oriented, resized).
- Generation settings go where the engines read them. OpenAI's own fields: max_tokens, temperature, top_p,
  seed. The engines' extensions, through extra_body (both vLLM's and LMDeploy's ChatCompletionRequest read
  them from the top level of the body): repetition_penalty (always, the local default 1.005 included);
  greedy decoding as temperature 0 plus top_k 1 (LMDeploy's top_k defaults to 40, so temperature alone would
  not make it greedy there); beam search (num_beams 2-3) as use_beam_search with best_of = the beam width
  (vLLM's sampling parameters) and num_beams (the name transformers-based servers read), `n` left at 1 so one
  choice comes back. An engine without beam search (LMDeploy) ignores these fields; the answer's history
  stamp still records what was asked.
- stream_options.include_usage: the server's final chunk (empty choices) carries the token counts.
"""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.records import GenerationSettings, Query

if TYPE_CHECKING:
    from PIL import Image

JPEG_QUALITY = 95


@dataclass(frozen=True)
class RemoteRequest:
    """Everything one chat-completions call sends: the OpenAI fields and the engines' extensions."""

    fields: dict[str, Any]  # model, messages, max_tokens, temperature, top_p, seed, stream, stream_options
    extra_body: dict[str, Any]  # repetition_penalty, top_k, use_beam_search, best_of, num_beams


def data_uri(image: Image.Image, image_format: str = "jpeg") -> str:
    """The image as a data URI: JPEG q95 (RGB) or PNG."""
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, "PNG")
        kind = "png"
    else:
        image.convert("RGB").save(buffer, "JPEG", quality=JPEG_QUALITY)
        kind = "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def messages(query: Query, image_format: str) -> list[dict[str, Any]]:
    """Earlier turns as user / assistant messages (text), then the images and the question."""
    content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": data_uri(p.image, image_format)}}
                                     for p in query.images]
    content.append({"type": "text", "text": query.question})
    earlier = [{"role": role, "content": text} for turn in query.history
               for role, text in (("user", turn.question), ("assistant", turn.answer))]
    return [*earlier, {"role": "user", "content": content}]


def sampling(settings: GenerationSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(OpenAI fields, extra_body) for the generation settings."""
    fields: dict[str, Any] = {"max_tokens": settings.max_new_tokens}
    extra: dict[str, Any] = {"repetition_penalty": settings.repetition_penalty}
    if settings.do_sample:
        fields["temperature"] = settings.temperature
        fields["top_p"] = settings.top_p
    else:
        fields["temperature"] = 0.0
        extra["top_k"] = 1
    if settings.seed is not None:
        fields["seed"] = settings.seed
    if settings.num_beams > 1:
        extra.update(use_beam_search=True, best_of=settings.num_beams, num_beams=settings.num_beams)
    return fields, extra


def build_request(query: Query, model: str, image_format: str) -> RemoteRequest:
    fields, extra = sampling(query.settings)
    fields.update(model=model, messages=messages(query, image_format), stream=True,
                  stream_options={"include_usage": True})
    return RemoteRequest(fields, extra)
