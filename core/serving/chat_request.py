"""Turn an OpenAI chat-completions request body into what Loupe asks: image bytes, a question, settings.

Decisions (a client written for OpenAI's API works unchanged; what Loupe cannot honour is refused, not ignored):
- One question per request, no conversation: exactly one user message (its text is the question, its
  images the images). System, developer, assistant and tool messages, and earlier user turns, are refused
  (400, param "messages"): Loupe's prompts are its templates, and it has no multi-turn mode to honour them.
- Images: `image_url` as a data URI (base64), or a local path (plain or file://) inside a folder listed in
  the setting `api_allowed_paths`; http(s) URLs are refused because Loupe never fetches from the network.
- Sampling: greedy (reproducible, Loupe's default) unless `temperature` > 0 is sent; then `top_p` and
  `seed` apply. `max_tokens` (or `max_completion_tokens`) defaults to the setting `max_new_tokens`. `n` must be 1.
- Fields Loupe cannot honour (`stop`, the penalties, `logprobs`/`top_logprobs`, `response_format`, `tools`/
  `tool_choice`, `functions`/`function_call`, `logit_bias`) are refused with a 400 naming the field unless
  sent with their "off" value (null, 0, false, [], {}, "none", {"type": "text"}), which some clients always send.
- `model` may be omitted (the server holds one model); the API refuses any other name with a 404.
- Session, as recorded in history: "api:" + the request's `user` field, else "api:" + the caller's address
  (the prefix tells history hooks which requests came through the API). The queue's fairness does not use
  it: core/serving/api.py queues each request in its client's lane (token or address), which `user` cannot change.
"""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.errors import ApiRequestError, ImageError
from core.inputs import questions
from core.records import GenerationSettings


class _ImageUrl(BaseModel):
    url: str
    detail: str | None = None


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "image_url", "input_text", "input_image"]
    text: str | None = None
    image_url: _ImageUrl | str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None


class _StreamOptions(BaseModel):
    include_usage: bool = False


class ChatBody(BaseModel):
    """The fields of OpenAI's request that Loupe reads, and those it refuses unless off (_UNSUPPORTED)."""

    model_config = ConfigDict(extra="ignore")
    model: str = ""
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: _StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    n: int = 1
    user: str | None = None
    stop: object = None
    presence_penalty: object = None
    frequency_penalty: object = None
    logprobs: object = None
    top_logprobs: object = None
    response_format: object = None
    tools: object = None
    tool_choice: object = None
    functions: object = None
    function_call: object = None
    logit_bias: object = None


# Field → the values meaning "off"; anything else asks for something Loupe would otherwise silently not do.
_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "stop": (None, [], ""), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
    "logprobs": (None, False), "top_logprobs": (None, 0), "response_format": (None, {"type": "text"}),
    "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []), "function_call": (None, "none"),
    "logit_bias": (None, {}),
}


@dataclass(frozen=True)
class ChatAsk:
    """One chat request, decoded: the image bytes in order, the question text and the generation settings."""

    images: tuple[bytes, ...]
    question: str
    settings: GenerationSettings
    stream: bool
    include_usage: bool
    session: str


def parse_body(raw: bytes) -> ChatBody:
    try:
        return ChatBody.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or None
        if first.get("type") in ("json_invalid", "json_type"):
            raise ApiRequestError(f"The request body is not valid JSON ({first.get('msg')}).",
                                  code="invalid_json") from None
        raise ApiRequestError(f"Invalid value for '{where}': {first.get('msg')}.", param=where,
                              code="invalid_value") from None


def allowed_roots(setting: str) -> tuple[Path, ...]:
    return tuple(Path(p.strip()).expanduser().resolve() for p in setting.split(",") if p.strip())


def _image_bytes(url: str, roots: tuple[Path, ...], max_bytes: int) -> bytes:
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header:
            raise ImageError("Image data URIs must be base64-encoded (data:image/png;base64,...).")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ImageError("The image data URI is not valid base64.") from None
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        raise ApiRequestError("Loupe does not download images: send it as a data URI (base64) instead.",
                              param="messages", code="unsupported_image_url")
    if parsed.scheme not in ("file", ""):
        raise ApiRequestError(f"Unsupported image URL scheme '{parsed.scheme}'.", param="messages",
                              code="unsupported_image_url")
    raw_path = unquote(parsed.path if parsed.scheme == "file" else url)
    if "\x00" in raw_path:  # the OS cannot take it; refused here rather than failing inside pathlib
        raise ApiRequestError("An image_url path contains a null byte; send a plain file path or a data URI.",
                              param="messages", code="invalid_value")
    path = Path(raw_path).expanduser()
    if not roots:
        raise ApiRequestError("Local image paths are not allowed on this server (setting api_allowed_paths is "
                              "empty); send the image as a data URI.", param="messages", code="path_not_allowed")
    try:
        resolved = path.resolve()
        if not path.is_absolute() or not any(resolved.is_relative_to(root) for root in roots):
            raise ApiRequestError(f"{path} is outside the folders this server may read "
                                  f"({', '.join(map(str, roots))}).", param="messages", code="path_not_allowed")
        if not resolved.is_file():
            raise ImageError(f"No image file at {path}.")
        if resolved.stat().st_size > max_bytes:
            raise ImageError(f"{path} is larger than {max_bytes // 2**20} MiB.")
        return resolved.read_bytes()
    except OSError as exc:  # a name too long, a file unreadable or gone between the checks
        raise ImageError(f"Cannot read the image at {path}: {exc.strerror or exc}.") from None


def decode(body: ChatBody, *, default_max_tokens: int, max_images: int, allowed_paths: str, max_bytes: int,
           fallback_session: str) -> ChatAsk:
    """Validate the fields and read the images (count checked before any is decoded)."""
    if body.n != 1:
        raise ApiRequestError("Loupe returns one answer per request: n must be 1.", param="n", code="unsupported_value")
    for field, off in _UNSUPPORTED.items():
        if getattr(body, field) not in off:
            raise ApiRequestError(f"Loupe does not support '{field}' (sent: {json.dumps(getattr(body, field))[:80]}); "
                                  "leave it out.", param=field, code="unsupported_parameter")
    users = [m for m in body.messages if m.role == "user"]
    if not users:
        raise ApiRequestError("The messages contain no user message with a question.", param="messages",
                              code="invalid_value")
    for index, message in enumerate(body.messages):
        if message.role != "user":
            raise ApiRequestError(f"messages[{index}] has role '{message.role}': Loupe takes one user message per "
                                  "request (its prompt is its own template; no system prompt or conversation).",
                                  param="messages", code="unsupported_value")
    if len(users) > 1:
        raise ApiRequestError(f"The messages hold {len(users)} user messages: Loupe answers one question per "
                              "request and does not continue conversations; send only the last one.",
                              param="messages", code="unsupported_value")
    urls: list[str] = []
    for part in users[0].content if isinstance(users[0].content, list) else ():
        if part.type in ("image_url", "input_image") and part.image_url is not None:
            urls.append(part.image_url if isinstance(part.image_url, str) else part.image_url.url)
    questions.check_image_count(len(urls), max_images=max_images)  # before any image is read
    last = users[0].content
    question = last if isinstance(last, str) else "\n".join(p.text or "" for p in last or () if p.text)
    roots = allowed_roots(allowed_paths)
    images = tuple(_image_bytes(url, roots, max_bytes) for url in urls)
    temperature = body.temperature or 0.0
    sampling = temperature > 0
    settings = GenerationSettings(
        max_new_tokens=body.max_completion_tokens or body.max_tokens or default_max_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else 1.0,
        top_p=body.top_p if sampling and body.top_p is not None else GenerationSettings.top_p,
        seed=body.seed,
    )
    return ChatAsk(images=images, question=question, settings=settings, stream=body.stream,
                   include_usage=bool(body.stream_options and body.stream_options.include_usage),
                   session=f"api:{body.user or fallback_session}")


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
