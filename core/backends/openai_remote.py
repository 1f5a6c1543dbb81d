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

Faults (a remote server is outside this process; none of them may hang the queue or fake an answer):
- Timeouts per request: connecting is bounded by connect_timeout_s (10 s), and every wait after it by the
  `stream_timeout_s` setting, the same limit a local model gets between tokens: a server that accepts and
  never answers, stops sending mid-stream, or sends only keep-alives is stopped after that long with a
  GenerationError naming the server and the setting. The client stays open: the next question runs.
- A 200 that is not `text/event-stream` (a non-streamed JSON answer, a proxy's HTML page) is a
  GenerationError, never an answer with empty text.
- A stream is complete only when a finish_reason or `[DONE]` arrived. One that ends or breaks before is a
  GenerationError saying so (decision: an error, not an answer marked truncated, so history keeps it as
  "failed"); the text that reached the reader is kept with the failed row as its partial answer
  (core/serving/recorded_ask.py), and the message says how many characters arrived.
- Error bodies (HTTP 4xx/5xx, or an error event inside the stream) in OpenAI's, vLLM's or FastAPI's shape
  are shown as their message, reduced to one bounded line of plain text (core/backends/remote_events.py).
"""
from __future__ import annotations

import base64
import io
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx

from core.backends.answer_builder import Generated, build_answer
from core.backends.base import EncodedQuery, refuse_what_it_cannot_take
from core.backends.remote_events import StreamState, body_message, refusal
from core.backends.streaming import AnswerStream, GenerationThread, TimedStreamer
from core.errors import GenerationError, ModelError
from core.models.load_progress import LoadProgress, ProgressCallback
from core.records import Answer, ModelCard, Query
from core.telemetry.markers import StageReadings

if TYPE_CHECKING:
    from PIL import Image


def _data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _refusal(response: httpx.Response, base_url: str) -> Exception:
    return refusal(response.status_code, response.text, response.reason_phrase, base_url)


class OpenAIRemoteBackend:
    """Streams answers from an OpenAI-compatible /v1/chat/completions endpoint over HTTP (SSE)."""

    name = "openai"
    can_stream = True
    can_batch = False
    has_local_gpus = False
    takes_history = True  # earlier turns go to the server as earlier user / assistant messages
    takes_video = False  # a server's video input is its own API; a tiled video image is XComposer's

    def __init__(self, base_url: str, api_key: str = "", model: str = "", *, max_images: int = 4,
                 stream_timeout_s: float = 120.0, connect_timeout_s: float = 10.0, max_in_flight: int = 8) -> None:
        if not base_url:
            raise ModelError("The openai backend needs a server: set openai_base_url (e.g. http://127.0.0.1:23333/v1).")
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        # The engine batches what it receives: several requests in flight use that, and one hung request
        # (bounded by stream_timeout_s) no longer holds everyone else's questions.
        self.max_in_flight = max_in_flight
        self.max_images = max_images
        self._timeout = stream_timeout_s
        self._connect_timeout = connect_timeout_s
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
        earlier = [{"role": role, "content": text} for turn in query.history
                   for role, text in (("user", turn.question), ("assistant", turn.answer))]
        s = query.settings
        body: dict[str, Any] = {
            "model": self.model_id, "messages": [*earlier, {"role": "user", "content": content}],
            "max_tokens": s.max_new_tokens, "stream": True, "stream_options": {"include_usage": True},
            "temperature": s.temperature if s.do_sample else 0.0,
        }
        if s.do_sample:
            body["top_p"] = s.top_p
        if s.seed is not None:
            body["seed"] = s.seed
        return body

    def encode(self, query: Query) -> EncodedQuery:
        refuse_what_it_cannot_take(self, query)
        started = time.perf_counter()
        body = self._body(query)
        return EncodedQuery(query, body, None, None, time.perf_counter() - started)

    def stream(self, encoded: EncodedQuery) -> AnswerStream:
        if self._client is None:
            raise ModelError("The remote model is not connected yet.")
        client, query, body = self._client, encoded.query, encoded.inputs
        started = time.perf_counter()
        # The reader's own timeout is only a backstop: the request's thread reports a stall first, with the
        # server's name (a read gap, or keep-alives without text, both end at about stream_timeout_s).
        streamer = TimedStreamer(None, 2 * self._timeout + self._connect_timeout + 1.0)
        cancel = threading.Event()
        state = StreamState(self.base_url)
        sent = time.perf_counter()

        def target() -> None:
            nonlocal sent
            sent = state.last = time.perf_counter()
            try:
                with client.stream("POST", f"{self.base_url}/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        response.read()
                        raise _refusal(response, self.base_url)
                    self._check_event_stream(response)
                    for line in response.iter_lines():
                        if cancel.is_set():
                            return  # leaving the block closes the connection: the server cancels too
                        piece = state.read_line(line)
                        if piece:
                            streamer.on_finalized_text(piece)
                        elif time.perf_counter() - state.last > self._timeout:
                            raise self._stalled()  # keep-alives or empty deltas, but no text
                        if state.done:
                            return
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout):
                    raise GenerationError(f"Could not connect to the remote server {self.base_url} within "
                                          f"{self._connect_timeout:g} s; the question was stopped.") from None
                raise self._stalled() from None
            except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if cancel.is_set():
                    return
                raise state.cut_error(f"the connection broke: {exc}") from None
            except httpx.HTTPError as exc:
                raise GenerationError(f"The connection to {self.base_url} failed ({exc}).") from None
            if not cancel.is_set() and not state.complete:
                raise state.cut_error("no finish_reason and no [DONE]")

        def finish(thread: GenerationThread) -> Answer:
            end = thread.finished_at or time.perf_counter()
            readings = StageReadings(
                prepared_s=sum(p.prepare_s for p in query.images) + encoded.encode_s, started=started,
                preprocessed=started, generation_started=sent, vision_s=0.0,
                first_token=state.first, ended=end, peaks={},
            )
            return build_answer(query, self._generated(state, cancel.is_set()), readings, model=self.model_id)

        return AnswerStream(GenerationThread(target, streamer).start(), cancel, finish)

    def _stalled(self) -> GenerationError:
        return GenerationError(
            f"The remote server {self.base_url} sent nothing for {self._timeout:g} s (stream_timeout_s) and the "
            "question was stopped. The model is still connected; try again, or raise stream_timeout_s if the "
            "server is only slow.")

    def _check_event_stream(self, response: httpx.Response) -> None:
        """A 200 that is not an event stream (a JSON answer, a proxy's HTML page) is no answer at all."""
        kind = response.headers.get("content-type", "")
        if kind.split(";")[0].strip().lower() == "text/event-stream":
            return
        head = b""
        for chunk in response.iter_bytes():  # a bounded look: enough for an error's message
            head += chunk
            if len(head) >= 4096:
                break
        said = body_message(head[:4096].decode("utf-8", "replace"))
        raise GenerationError(f"The remote server {self.base_url} answered with {kind or 'no content type'}, "
                              f"not an event stream, so there is no answer ({said}).")

    @staticmethod
    def _generated(state: StreamState, cancelled: bool) -> Generated:
        usage = state.usage
        return Generated(
            "".join(state.pieces), input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or len(state.pieces)),
            hit_limit=state.finish == "length", cancelled=cancelled,
        )
