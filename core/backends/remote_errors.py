"""What an OpenAI-compatible server's errors say, as the typed error the analyst sees (used by
core/backends/openai_remote.py, whose docstring has the decisions). The openai client raises its own exception
types; each becomes a Loupe error here, its message the server's own text.

Error text from a server is outside text: it is reduced to one plain line (an HTML page to its words, JSON to
its message) and bounded, so what the analyst sees is the server's message, never its markup or a dump.
"""
from __future__ import annotations

import html
import json
import re

import openai

from core.errors import GenerationError, LoupeError, ModelError, QuestionError

MESSAGE_LIMIT = 300  # characters of a server's message shown; an error page can be megabytes


def plain(text: str) -> str:
    """One bounded line of plain text from a body that may be an HTML page."""
    if "<" in text and ">" in text:
        text = re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)
        text = html.unescape(re.sub(r"<[^>]*>", " ", text))
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def error_in(payload: object) -> str | None:
    """The message of an error in any shape servers use: OpenAI's {"error": {"message"}}, {"error": "..."},
    vLLM's and LMDeploy's {"object": "error", "message"}, LMDeploy's proxy {"error_code", "text"}, FastAPI's
    {"detail"}; None when `payload` is not an error."""
    if not isinstance(payload, dict):
        return None
    error = payload.get("error")
    if isinstance(error, dict):
        return plain(str(error.get("message") or json.dumps(error)))
    if error:
        return plain(str(error))
    if payload.get("object") == "error":
        return plain(str(payload.get("message") or "an error without a message"))
    if "error_code" in payload and "text" in payload:
        return plain(str(payload["text"]))
    if "detail" in payload:
        return plain(str(payload["detail"]))
    return None


def body_message(text: str, reason: str = "") -> str:
    """What an error body says, as one plain line: its JSON error's message, else its text, else the reason."""
    try:
        found = error_in(json.loads(text))
    except ValueError:
        found = None
    return found or plain(text) or reason or "no message"


def refusal(status: int, text: str, reason: str, base_url: str, tries: int = 1) -> LoupeError:
    """A non-200 answer as the typed error the analyst sees (`tries`: how often it was asked, retries included)."""
    message = body_message(text, reason)
    asked = f" (asked {tries} times)" if tries > 1 and (status in (408, 409, 429) or status >= 500) else ""
    if status in (401, 403):
        return ModelError(f"The remote server {base_url} refused the API key ({message}). Check openai_api_key.")
    if status in (400, 413, 422):
        return QuestionError(f"The remote server refused the question: {message}")
    if status == 404:
        return ModelError(f"The remote server {base_url} has no such model or route ({message}).")
    if status == 429:
        return GenerationError(f"The remote server is busy ({message}){asked}; try again in a while.")
    return GenerationError(f"The remote server failed to answer (HTTP {status}: {message}){asked}.")


def from_openai(error: openai.APIError, base_url: str, tries: int) -> LoupeError:
    """An exception of the openai client, raised before the answer's stream began, as a Loupe error."""
    if isinstance(error, openai.APIStatusError):
        response = error.response
        try:
            text = response.text
        except Exception:  # noqa: BLE001 - a body that cannot be read still has a status
            text = ""
        return refusal(error.status_code, text, response.reason_phrase, base_url, tries)
    if isinstance(error, openai.APITimeoutError):
        return GenerationError(f"The remote server {base_url} did not answer within the timeout (asked {tries} "
                               "times); the question was stopped.")
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error.__context__
        why = f": {plain(str(cause))}" if cause else ""
        return GenerationError(f"Cannot reach the remote server {base_url} (asked {tries} times{why}).")
    return GenerationError(f"The remote server {base_url} failed: {plain(str(error))}")
