"""Backend for any OpenAI-compatible VLM server (LMDeploy serving XComposer2.5 with --tp 2, vLLM, another
Loupe): the model runs there, this process only sends images and reads the streamed answer.

Decisions:
- The base URL is given as the `openai` client takes it (e.g. http://127.0.0.1:23333/v1); the model id is
  the setting `model` when set (it must be one the server lists), else the server's first model.
- Images travel as PNG data URIs of the prepared image: lossless, so the remote model sees exactly what a
  local one would.
- Encoding (`encode`) builds the request body once. Its token counts are unknown here (no tokenizer), so
  local admission does not apply: the server decides.
- Timings: `preprocess` = image preparation + encoding, `prefill` = request sent → first token (so it
  includes the remote queue and network), `decode` = first token → last, `vision` = 0 (not observable).
  No stage markers are published (there is no local memory to chart): this backend reads the same
  boundaries itself and hands them to the one answer builder. Token counts come from the server's usage
  report (requested with stream_options.include_usage).
- No GPU memory is reported (has_local_gpus = False): the UI shows latency and tokens only.
- An answer cut at max_tokens (finish_reason "length") is trimmed to its last sentence end, as locally.
"""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx

from core.backends.answer_builder import Generated, build_answer
from core.backends.base import EncodedQuery
from core.backends.streaming import AnswerStream, GenerationThread, TimedStreamer
from core.errors import GenerationError, ModelError, QuestionError
from core.models.load_progress import LoadProgress, ProgressCallback
from core.records import Answer, ModelCard, Query
from core.telemetry.markers import StageReadings

if TYPE_CHECKING:
    from PIL import Image


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _server_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300] or response.reason_phrase


def _refusal(response: httpx.Response, base_url: str) -> Exception:
    """A non-200 answer as the typed error the analyst sees."""
    message = _server_message(response)
    status = response.status_code
    if status in (401, 403):
        return ModelError(f"The remote server {base_url} refused the API key ({message}). Check openai_api_key.")
    if status in (400, 413, 422):
        return QuestionError(f"The remote server refused the question: {message}")
    if status == 404:
        return ModelError(f"The remote server {base_url} has no such model or route ({message}).")
    if status == 429:
        return GenerationError(f"The remote server is busy ({message}); try again in a while.")
    return GenerationError(f"The remote server failed to answer (HTTP {status}: {message}).")


class OpenAIRemoteBackend:
    """Streams answers from an OpenAI-compatible /v1/chat/completions endpoint over HTTP (SSE)."""

    name = "openai"
    can_stream = True
    can_batch = False
    has_local_gpus = False

    def __init__(self, base_url: str, api_key: str = "", model: str = "", *, max_images: int = 4,
                 stream_timeout_s: float = 120.0, connect_timeout_s: float = 10.0) -> None:
        if not base_url:
            raise ModelError("The openai backend needs a server: set openai_base_url (e.g. http://127.0.0.1:23333/v1).")
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        self.max_images = max_images
        self._timeout = stream_timeout_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http_timeout = httpx.Timeout(stream_timeout_s, connect=connect_timeout_s)
        self._client: httpx.Client | None = None

    def load(self, progress: ProgressCallback | None = None) -> None:
        report = progress or (lambda _p: None)
        report(LoadProgress(0.1, f"Asking {self.base_url} for its models"))
        client = httpx.Client(headers=self._headers, timeout=self._http_timeout)
        try:
            response = client.get(f"{self.base_url}/models")
        except httpx.HTTPError as exc:
            client.close()
            raise ModelError(f"Cannot reach the remote server at {self.base_url} ({exc}).") from None
        if response.status_code != 200:
            client.close()
            raise _refusal(response, self.base_url)
        try:
            available = [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError):
            client.close()
            raise ModelError(f"{self.base_url}/models did not answer like an OpenAI-compatible server.") from None
        if not available or (self.model_id and self.model_id not in available):
            client.close()
            raise ModelError(f"The remote server has no model '{self.model_id}'; it serves: "
                             f"{', '.join(available) or 'nothing'}.")
        self.model_id = self.model_id or available[0]
        self._client = client
        report(LoadProgress(1.0, f"Remote model {self.model_id} ready at {self.base_url}"))

    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def describe(self) -> ModelCard:
        host = urlparse(self.base_url).netloc or self.base_url
        return ModelCard(name=self.model_id, backend=self.name, dtype="remote", attn_implementation="remote",
                         device="remote", device_map_summary=f"remote server {host}",
                         notes=(f"answers come from {self.base_url}; no GPU charts for a remote model",))

    def _body(self, query: Query) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": _data_uri(p.image)}}
                                         for p in query.images]
        content.append({"type": "text", "text": query.question})
        s = query.settings
        body: dict[str, Any] = {
            "model": self.model_id, "messages": [{"role": "user", "content": content}],
            "max_tokens": s.max_new_tokens, "stream": True, "stream_options": {"include_usage": True},
            "temperature": s.temperature if s.do_sample else 0.0,
        }
        if s.do_sample:
            body["top_p"] = s.top_p
        if s.seed is not None:
            body["seed"] = s.seed
        return body

    def encode(self, query: Query) -> EncodedQuery:
        started = time.perf_counter()
        body = self._body(query)
        return EncodedQuery(query, body, None, None, time.perf_counter() - started)

    def stream(self, encoded: EncodedQuery) -> AnswerStream:
        if self._client is None:
            raise ModelError("The remote model is not connected yet.")
        client, query, body = self._client, encoded.query, encoded.inputs
        started = time.perf_counter()
        streamer = TimedStreamer(None, self._timeout)
        cancel = threading.Event()
        state: dict[str, Any] = {"pieces": [], "finish": None, "usage": {}}

        def target() -> None:
            state["sent"] = time.perf_counter()
            try:
                with client.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        response.read()
                        raise _refusal(response, self.base_url)
                    for line in response.iter_lines():
                        if cancel.is_set():
                            return  # leaving the block closes the connection: the server cancels too
                        if self._read_event(line, state, streamer):
                            return
            except httpx.HTTPError as exc:
                raise GenerationError(f"The connection to {self.base_url} failed ({exc}).") from None

        def finish(thread: GenerationThread) -> Answer:
            end = thread.finished_at or time.perf_counter()
            readings = StageReadings(
                prepared_s=sum(p.prepare_s for p in query.images) + encoded.encode_s, started=started,
                preprocessed=started, generation_started=state.get("sent", started), vision_s=0.0,
                first_token=state.get("first"), ended=end, peaks={},
            )
            return build_answer(query, self._generated(state, cancel.is_set()), readings, model=self.model_id)

        return AnswerStream(GenerationThread(target, streamer).start(), cancel, finish)

    @staticmethod
    def _read_event(line: str, state: dict[str, Any], streamer: TimedStreamer) -> bool:
        """Handle one SSE line; True at the end of the stream."""
        if not line.startswith("data:"):
            return False  # blank separators and ": comments"
        data = line[5:].strip()
        if data == "[DONE]":
            return True
        event = json.loads(data)
        if "error" in event:
            raise GenerationError(f"The remote server failed while answering: {event['error'].get('message')}")
        state["usage"] = event.get("usage") or state["usage"]
        for choice in event.get("choices") or ():
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                state.setdefault("first", time.perf_counter())
                state["pieces"].append(piece)
                streamer.on_finalized_text(piece)
            state["finish"] = choice.get("finish_reason") or state["finish"]
        return False

    @staticmethod
    def _generated(state: dict[str, Any], cancelled: bool) -> Generated:
        usage = state["usage"]
        return Generated(
            "".join(state["pieces"]), input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or len(state["pieces"])),
            hit_limit=state["finish"] == "length", cancelled=cancelled,
        )
