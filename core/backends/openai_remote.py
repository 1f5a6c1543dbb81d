"""Backend for any OpenAI-compatible VLM server (LMDeploy serving XComposer2.5 with --tp 2, vLLM, another
Loupe): the model runs there, this process only sends images and reads the streamed answer, through the
official `openai` client. It imports neither torch nor transformers: a remote-only Loupe never loads them.

Decisions:
- The base URL is given as the `openai` client takes it (e.g. http://127.0.0.1:23333/v1); the model is chosen
  by id from the server's /v1/models (core/backends/remote_models.py), the request built once at encode time
  (core/backends/remote_request.py: images as JPEG q95 or PNG, generation settings as the engines take them).
- Encoding's token counts are unknown here (no tokenizer), so local admission does not apply: the server
  decides.
- Timings: `preprocess` = image preparation + encoding, `prefill` = request sent → first token (so it
  includes the remote queue and network), `decode` = first token → last, `vision` = 0 (not observable).
  No stage markers are published (there is no local memory to chart): this backend reads the same
  boundaries itself and hands them to the one answer builder. Token counts come from the server's usage
  chunk (stream_options.include_usage).
- No GPU memory is reported (has_local_gpus = False): the UI shows latency and tokens; /health and the model
  card show the remote engine's health and models (`remote_health`, `served`).
- An answer cut at max_tokens (finish_reason "length") is trimmed to its last sentence end, as locally.

Faults (a remote server is outside this process; none of them may hang the queue or fake an answer):
- Retries: the openai client retries, with exponential backoff (0.5 s doubling, up to 8 s, jittered, or the
  server's Retry-After), a refused or broken connection, a timeout before the answer began, and HTTP
  408/409/429/5xx, up to `remote_max_retries` (2) times. A stream that already began is never retried (its
  text has reached the analyst).
- Timeouts per request: connecting is bounded by connect_timeout_s (10 s), and every wait after it by the
  `stream_timeout_s` setting, the same limit a local model gets between tokens: a server that accepts and
  never answers, stops sending mid-stream, or sends only empty deltas is stopped after that long with a
  GenerationError naming the server and the setting. A server that sends only keep-alive comments is cut
  by the reader's backstop (every try's connect and wait, plus the backoff), which closes the connection. The client stays
  open: the next question runs.
- A 200 that is not `text/event-stream` (a non-streamed JSON answer, a proxy's HTML page) is a
  GenerationError, never an answer with empty text.
- A stream is complete only when a finish_reason arrived (the client reads `[DONE]` itself). One that ends
  or breaks before is a GenerationError saying so (decision: an error, not an answer marked truncated, so
  history keeps it as "failed"); the text that reached the reader is kept with the failed row as its
  partial answer (core/serving/recorded_ask.py), and the message says how many characters arrived.
- Error bodies (HTTP 4xx/5xx, or an error event inside the stream) in OpenAI's, vLLM's, LMDeploy's or
  FastAPI's shape are shown as their message, reduced to one bounded line of plain text
  (core/backends/remote_errors.py).
"""
from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlparse

import httpx2
import openai

from core.backends.answer_builder import Generated, build_answer
from core.backends.base import EncodedQuery, refuse_what_it_cannot_take
from core.backends.remote_errors import body_message, error_in, from_openai
from core.backends.remote_models import RemoteHealth, ServedModel, choose, parse_listing, timed
from core.backends.remote_request import RemoteRequest, build_request
from core.backends.remote_stream import Cancel, StreamState
from core.backends.streaming import AnswerStream, GenerationThread, TextQueue
from core.errors import GenerationError, ModelError
from core.messages import MessageText
from core.models.load_progress import LoadProgress, ProgressCallback
from core.records import Answer, ModelCard, Query
from core.telemetry.markers import StageReadings

HEALTH_TIMEOUT_S = 5.0
REMOTE_NOTE = MessageText("model.remote", "answers come from {url}; no GPU charts for a remote model")


class OpenAIRemoteBackend:
    """Streams answers from an OpenAI-compatible /v1/chat/completions endpoint with the openai client."""

    name = "openai"
    can_stream = True
    can_batch = False
    has_local_gpus = False
    takes_history = True  # earlier turns go to the server as earlier user / assistant messages
    takes_video = False  # a server's video input is its own API; a tiled video image is XComposer's

    def __init__(self, base_url: str, api_key: str = "", model: str = "", *, max_images: int = 4,
                 stream_timeout_s: float = 120.0, connect_timeout_s: float = 10.0, max_in_flight: int = 8,
                 max_retries: int = 2, image_format: str = "jpeg") -> None:
        if not base_url:
            raise ModelError("The openai backend needs a server: set openai_base_url (e.g. http://127.0.0.1:23333/v1).")
        self.base_url = base_url.rstrip("/")
        self.model_id = model
        # The engine batches what it receives: several requests in flight use that, and one hung request
        # (bounded by stream_timeout_s) no longer holds everyone else's questions.
        self.max_in_flight = max_in_flight
        self.max_images = max_images
        self.max_retries = max_retries
        self.image_format = image_format
        self.served: tuple[ServedModel, ...] = ()
        self._timeout = stream_timeout_s
        self._connect_timeout = connect_timeout_s
        self._api_key = api_key or "none"  # the client insists on a key; servers without auth ignore it
        self._client: openai.OpenAI | None = None

    # -- the client ------------------------------------------------------------------------------
    def _new_client(self, timeout: float, retries: int) -> openai.OpenAI:
        # Connections enough for every request in flight plus a health probe, so none waits for a slot. The
        # timeout is the client's own (it passes it with every request, over the HTTP client's).
        bounds = httpx2.Timeout(timeout, connect=min(self._connect_timeout, timeout))
        http = httpx2.Client(timeout=bounds, limits=httpx2.Limits(max_connections=self.max_in_flight + 4))
        return openai.OpenAI(base_url=self.base_url, api_key=self._api_key, max_retries=retries, timeout=bounds,
                             http_client=http)

    def _backstop_s(self) -> float:
        """How long the reader waits for a piece before giving up itself: every try (connect + wait) and the
        client's backoff between them (0.5 s doubling, at most 8 s), plus a second."""
        tries = 1 + self.max_retries
        backoff = sum(min(0.5 * 2**i, 8.0) for i in range(self.max_retries))
        return tries * (self._connect_timeout + self._timeout) + backoff + 1.0

    def _listing(self, client: openai.OpenAI) -> tuple[ServedModel, ...]:
        raw = client.models.with_raw_response.list()
        try:
            payload = json.loads(raw.http_response.text)
        except ValueError:
            payload = None
        return parse_listing(payload, self.base_url)

    def load(self, progress: ProgressCallback | None = None) -> None:
        report = progress or (lambda _p: None)
        report(LoadProgress(0.1, f"Asking {self.base_url} for its models"))
        client = self._new_client(self._timeout, self.max_retries)
        try:
            self.served = self._listing(client)
            chosen = choose(self.served, self.model_id, self.base_url)
        except openai.APIStatusError as exc:
            client.close()
            raise from_openai(exc, self.base_url, 1 + self.max_retries) from None
        except openai.APIError as exc:  # no connection, or no answer in time: the model cannot be used
            client.close()
            raise ModelError(str(from_openai(exc, self.base_url, 1 + self.max_retries))) from None
        except ModelError:
            client.close()
            raise
        self.model_id = chosen.id
        self._client = client
        report(LoadProgress(1.0, f"Remote model {self.model_id} ready at {self.base_url}"))

    def unload(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def describe(self) -> ModelCard:
        host = urlparse(self.base_url).netloc or self.base_url
        remote = REMOTE_NOTE(url=self.base_url)
        notes = [remote.text]
        if self.served:
            notes.append("the server serves: " + "; ".join(m.describe() for m in self.served))
        return ModelCard(name=self.model_id, backend=self.name, dtype="remote", attn_implementation="remote",
                         device="remote", device_map_summary=f"remote server {host}", notes=tuple(notes),
                         note_messages=(remote,))

    def remote_health(self) -> RemoteHealth:
        """One quick look at the server (its /v1/models), for Loupe's /health."""
        client = self._new_client(HEALTH_TIMEOUT_S, 0)
        started = time.perf_counter()
        try:
            served, took = timed(lambda: self._listing(client))
        except (openai.APIError, ModelError) as exc:
            error = from_openai(exc, self.base_url, 1) if isinstance(exc, openai.APIError) else exc
            return RemoteHealth(self.base_url, False, self.model_id, (), time.perf_counter() - started, str(error))
        finally:
            client.close()
        return RemoteHealth(self.base_url, True, self.model_id, tuple(m.id for m in served), took)

    # -- questions -------------------------------------------------------------------------------
    def encode(self, query: Query) -> EncodedQuery:
        refuse_what_it_cannot_take(self, query)
        started = time.perf_counter()
        request = build_request(query, self.model_id, self.image_format)
        return EncodedQuery(query, request, None, None, time.perf_counter() - started)

    def stream(self, encoded: EncodedQuery) -> AnswerStream:
        if self._client is None:
            raise ModelError("The remote model is not connected yet.")
        client, query, request = self._client, encoded.query, encoded.inputs
        assert isinstance(request, RemoteRequest)
        started = time.perf_counter()
        # The reader's own timeout is only a backstop: the request's thread reports a stall first, with the
        # server's name; the backstop catches a server that sends only keep-alive comments.
        pieces = TextQueue(self._backstop_s())
        cancel = Cancel()
        state = StreamState(self.base_url)

        def target() -> None:
            state.sent = state.last = time.perf_counter()
            try:
                raw = client.chat.completions.with_raw_response.create(**request.fields,
                                                                       extra_body=request.extra_body)
            except openai.APIError as exc:
                if cancel.is_set():
                    return  # cancelled while waiting for the server: no error for an answer nobody awaits
                if isinstance(exc, openai.APITimeoutError):
                    raise self._stalled(retried=True) from None
                raise from_openai(exc, self.base_url, 1 + self.max_retries) from None
            cancel.closes(raw.http_response)
            if cancel.is_set():
                return  # cancelled while the server was starting its answer: an empty, cancelled answer
            self._check_event_stream(raw.http_response)
            chunks = raw.parse()
            try:
                for chunk in chunks:
                    if cancel.is_set():
                        return  # closing the response (finally) drops the connection: the server cancels too
                    piece = state.take(chunk.to_dict())
                    if piece:
                        pieces.put(piece)
                    elif time.perf_counter() - state.last > self._timeout:
                        raise self._stalled()  # empty deltas, but no text
            except openai.APITimeoutError:
                raise self._stalled() from None
            except openai.APIConnectionError as exc:
                if cancel.is_set():
                    return
                raise state.cut_error(f"the connection broke: {exc.__cause__ or exc}") from None
            except openai.APIError as exc:  # an error event inside the stream ({"error": ...})
                if cancel.is_set():
                    return
                said = error_in({"error": exc.body}) or str(exc)
                raise GenerationError(f"The remote server failed while answering: {said}") from None
            except ValueError as exc:  # an event that is not JSON
                if cancel.is_set():
                    return
                raise state.not_json(getattr(exc, "doc", str(exc))) from None
            except Exception:
                if cancel.is_set():
                    return  # reading a response that the cancel closed, whatever the HTTP library calls that
                raise
            finally:
                chunks.close()
            if not cancel.is_set() and not state.complete:
                raise state.cut_error("no finish_reason")

        def finish(thread: GenerationThread) -> Answer:
            end = thread.finished_at or time.perf_counter()
            readings = StageReadings(
                prepared_s=sum(p.prepare_s for p in query.images) + encoded.encode_s, started=started,
                preprocessed=started, generation_started=state.sent or started, vision_s=0.0,
                first_token=state.first, ended=end, peaks={},
            )
            return build_answer(query, self._generated(state, cancel.is_set()), readings, model=self.model_id)

        return AnswerStream(GenerationThread(target, pieces).start(), cancel, finish)

    def _stalled(self, retried: bool = False) -> GenerationError:
        tries = f" (asked {1 + self.max_retries} times)" if retried and self.max_retries else ""
        return GenerationError(
            f"The remote server {self.base_url} sent nothing for {self._timeout:g} s (stream_timeout_s){tries} "
            "and the question was stopped. The model is still connected; try again, or raise stream_timeout_s "
            "if the server is only slow.")

    def _check_event_stream(self, response: httpx2.Response) -> None:
        """A 200 that is not an event stream (a JSON answer, a proxy's HTML page) is no answer at all."""
        kind = response.headers.get("content-type", "")
        if kind.split(";")[0].strip().lower() == "text/event-stream":
            return
        head = b""
        try:
            for chunk in response.iter_bytes():  # a bounded look: enough for an error's message
                head += chunk
                if len(head) >= 4096:
                    break
        finally:
            response.close()
        said = body_message(head[:4096].decode("utf-8", "replace"))
        raise GenerationError(f"The remote server {self.base_url} answered with {kind or 'no content type'}, "
                              f"not an event stream, so there is no answer ({said}).")

    @staticmethod
    def _generated(state: StreamState, cancelled: bool) -> Generated:
        usage: dict[str, Any] = state.usage
        return Generated(
            "".join(state.pieces), input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or len(state.pieces)),
            hit_limit=state.finish == "length", cancelled=cancelled,
        )
