"""Loupe's OpenAI-compatible HTTP API, on the same queue as the dashboard (core/serving/scheduler.py).

`POST /v1/chat/completions` (streaming as server-sent events), `GET /v1/models`, `GET /v1/models/{id}`,
`GET /health`, `GET /metrics` (Prometheus, core/serving/metrics.py).
How a request body becomes a question is in core/serving/chat_request.py. Decisions here:
- Errors always come back in OpenAI's shape {"error": {"message", "type", "param", "code"}}: 400 for a
  bad body, image or question (and for a question too big for free memory), 401 for a missing or wrong
  token, 404 for a `model` other than the loaded one (`model_not_found`; an omitted model means the loaded
  one), 404/405 for unknown routes, 413 for a body over `max_body_bytes`, 429 when the queue is full or
  the client already has its share of it waiting,
  500 when generation failed (out of memory included; the model stays loaded). Nothing reaches the
  client as a stack trace.
- Auth: when the setting `api_token` is set, /v1/* and /metrics need `Authorization: Bearer <token>`; /health
  stays open for load-balancer probes and shows only the queue and memory (for a remote engine: whether it
  answers and what it serves, 503 when it does not answer, instead of this machine's GPUs). The token and
  the body size are checked before any route, and a refused body is answered at once and then read away
  up to a bound, so every client sees the 401/413 (core/serving/api_guards.py).
- Questions may be up to `api_max_question_chars` characters (200 by default, like the pages'
  `max_question_chars`, but set on its own: raising it for API clients leaves the dashboard's box as it is).
- Fairness: each request waits in its client's lane of the shared queue, the client being the caller's
  address. Loupe has one `api_token`, shared by everyone it is given to, so the token says only that a caller
  may ask, not who is asking: the address is what tells clients apart. The `user` field is only recorded
  (history's session), so rotating it neither jumps the queue nor lifts the per-client cap (a quarter of
  the queue, core/serving/scheduler.py).
- A client that disconnects cancels its request, whether it waits in the queue or is being answered.
- While a streamed request waits in the queue, SSE comments (": 2 requests ahead") keep the connection
  alive and tell a curious client where it stands; OpenAI clients ignore them.
- An answer cut at max_tokens streams as generated; its last chunk says finish_reason "length" and
  carries the sentence-trimmed text in `loupe.text`. Every response carries `loupe` with stage timings.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import psutil
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.errors import AdmissionError, ApiRequestError, GenerationError, ImageError, LoupeError, QuestionError, QueueFullError
from core.inputs import questions
from core.records import Answer
from core.serving import chat_request
from core.serving.api_guards import ApiGuard
from core.serving.api_server import RunningServer, start_server
from core.serving.metrics import CONTENT_TYPE, LoupeMetrics
from core.serving.scheduler import Scheduler, Ticket, describe_position, scheduler_for
from core.statuses import RequestStatus
from core.telemetry import gpu_reader, nvml
from core.telemetry.sampler import get_sampler

if TYPE_CHECKING:
    from core.serving.engine import Engine

__all__ = ["DEFAULT_MAX_BODY_BYTES", "RunningServer", "create_app", "start_server"]  # the runner moved to api_server

DEFAULT_MAX_BODY_BYTES = 32 * 2**20  # four large photos as base64 data URIs
_POLL_S = 0.5  # how often a waiting request checks that its client is still there


def _error(status: int, message: str, kind: str, code: str | None, param: str | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(chat_request.error_body(message, kind, code, param), status_code=status, headers=headers)


def _classify(exc: LoupeError) -> tuple[int, str, str, str | None]:
    """HTTP status, OpenAI error type, code and param for one of Loupe's typed errors."""
    if isinstance(exc, ApiRequestError):
        return 400, "invalid_request_error", exc.code, exc.param
    if isinstance(exc, QueueFullError):
        return 429, "server_busy", "queue_full", None
    if isinstance(exc, AdmissionError):
        return 400, "invalid_request_error", "insufficient_memory", "max_tokens"
    if isinstance(exc, ImageError):
        return 400, "invalid_request_error", "invalid_image", "messages"
    if isinstance(exc, QuestionError):
        return 400, "invalid_request_error", "invalid_question", "messages"
    if isinstance(exc, GenerationError):
        return 500, "server_error", "generation_failed", None
    return 500, "server_error", "internal_error", None


def _loupe_error(exc: LoupeError) -> JSONResponse:
    status, kind, code, param = _classify(exc)
    return _error(status, str(exc), kind, code, param)


def _usage(answer: Answer) -> dict[str, int]:
    return {"prompt_tokens": answer.input_tokens, "completion_tokens": answer.output_tokens,
            "total_tokens": answer.input_tokens + answer.output_tokens}


def _sse(payload: dict[str, object] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)}\n\n"


class _Reader:
    """Waits for a ticket's pieces on the event loop (woken by the worker thread), without blocking it."""

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket
        loop, event = asyncio.get_running_loop(), asyncio.Event()
        self._event = event  # the callback must not hold the reader: ticket → callback → reader would be a cycle

        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        ticket.on_update(wake)

    async def next(self) -> tuple[list[str], bool]:
        """Pieces so far and whether it ended; waits at most _POLL_S when there is nothing new."""
        pieces, ended = self.ticket.drain()
        if pieces or ended:
            return pieces, ended
        try:
            await asyncio.wait_for(self._event.wait(), _POLL_S)
        except TimeoutError:
            pass
        self._event.clear()
        return self.ticket.drain()


def create_app(engine: Engine, scheduler: Scheduler | None = None, *,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, record_history: bool = True) -> FastAPI:
    """The API over `engine`'s shared queue (the dashboard's, when both run in one process); every API
    request, answered or failed, is written to history (page "api")."""
    sched = scheduler or scheduler_for(engine)
    settings = engine.settings
    if record_history:
        from core.history.store import HistoryStore
        from core.serving.api_requests import record_api_requests

        record_api_requests(sched, engine, HistoryStore(settings.history_path))
    card = engine.describe()
    created = int(time.time())
    app = FastAPI(title="Loupe", version="1", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "invalid_request_error", "not_found"
                      if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else None)

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"Internal error ({type(exc).__name__}); the server is still running.",
                      "server_error", "internal_error")

    # The token and the body size are checked before any route (core/serving/api_guards.py).
    app.add_middleware(ApiGuard, token=settings.api_token, max_body_bytes=max_body_bytes)

    remote_health = getattr(engine.backend, "remote_health", None)  # a remote engine: its health, not local GPUs

    @app.get("/health", response_model=None)
    async def health() -> Response | dict[str, object]:
        queue = sched.snapshot()
        if remote_health is not None:
            remote = (await run_in_threadpool(remote_health)).to_dict()
            return JSONResponse({
                "status": "ok" if remote["reachable"] else "remote unreachable", "model": card.name,
                "backend": card.backend, "device": card.device,
                "queue": {"waiting": queue.waiting, "running": queue.running, "sessions": queue.sessions},
                "remote": remote, "gpus": [], "rss_gb": round(psutil.Process().memory_info().rss / 1e9, 3),
            }, status_code=200 if remote["reachable"] else 503)
        gpus = [{"index": g.index, "name": g.name, "used_gb": round((g.used_bytes or 0) / 1e9, 3),
                 "free_gb": round((g.free_bytes or 0) / 1e9, 3), "total_gb": round((g.total_bytes or 0) / 1e9, 3)}
                for g in await run_in_threadpool(gpu_reader.read_gpus)]
        return {"status": "ok", "model": card.name, "backend": card.backend, "device": card.device,
                "queue": {"waiting": queue.waiting, "running": queue.running, "sessions": queue.sessions},
                "gpus": gpus, "nvml": nvml.state(), "rss_gb": round(psutil.Process().memory_info().rss / 1e9, 3)}

    metrics = LoupeMetrics(schedulers=lambda: (sched,), sample=lambda: get_sampler(settings).latest())
    metrics.watch(sched)

    @app.get("/metrics", response_model=None)
    async def prometheus_metrics() -> Response:
        return Response(await run_in_threadpool(metrics.text), media_type=CONTENT_TYPE)

    details: dict[str, object] = {"backend": card.backend, "device": card.device, "dtype": card.dtype,
                                  "is_demo": card.is_demo}
    if remote_health is not None:  # what the remote engine serves, as it listed it when the model was loaded
        details["remote"] = {"base_url": getattr(engine.backend, "base_url", ""),
                             "served": [m.id for m in getattr(engine.backend, "served", ())]}
    model_card = {"id": card.name, "object": "model", "created": created, "owned_by": "loupe", "loupe": details}

    @app.get("/v1/models", response_model=None)
    async def models() -> dict[str, object]:
        return {"object": "list", "data": [model_card]}

    @app.get("/v1/models/{model_id:path}", response_model=None)  # ids like "org/name" hold a slash
    async def model(model_id: str) -> Response | dict[str, object]:
        return model_card if model_id == card.name else _unknown_model(model_id, card.name)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response | dict[str, object]:
        raw = await request.body()  # within max_body_bytes: ApiGuard refused a larger one
        host = request.client.host if request.client else "unknown"
        client = f"api-address:{host}"  # who is asking, for the queue (see Fairness above)
        try:
            body = chat_request.parse_body(bytes(raw))
            if body.model and body.model != card.name:
                return _unknown_model(body.model, card.name)
            ask = await run_in_threadpool(
                chat_request.decode, body, default_max_tokens=settings.max_new_tokens,
                max_images=min(settings.max_images, engine.backend.max_images),
                allowed_paths=settings.api_allowed_paths, max_bytes=max_body_bytes, fallback_session=host)
            # The API's own question limit (api_max_question_chars), not the pages' max_question_chars.
            query = await run_in_threadpool(
                questions.build_query, list(ask.images), ask.question, ask.settings, prepare=engine.prepare_image,
                max_chars=settings.api_max_question_chars, max_images=min(settings.max_images, engine.backend.max_images))
            # submit() encodes the query (the processor: tokens and pixels), so it runs off the event loop too.
            ticket = await run_in_threadpool(sched.submit, query, session=ask.session, client=client)
        except LoupeError as exc:
            return _loupe_error(exc)
        meta = {"id": f"chatcmpl-loupe-{ticket.id}", "created": int(time.time()), "model": card.name}
        if ask.stream:
            return StreamingResponse(_stream(request, _Reader(ticket), meta, ask.include_usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        return await _complete(request, _Reader(ticket), meta)

    return app


def _unknown_model(asked: str, served: str) -> JSONResponse:
    return _error(404, f"The model '{asked[:200]}' does not exist on this server; it serves '{served}' "
                  "(GET /v1/models), or leave 'model' out.", "invalid_request_error", "model_not_found", "model")


async def _complete(request: Request, reader: _Reader, meta: dict[str, object]) -> JSONResponse | dict[str, object]:
    ticket = reader.ticket
    text: list[str] = []
    while True:
        pieces, ended = await reader.next()
        text.extend(pieces)
        if ended:
            break
        if await request.is_disconnected():
            ticket.cancel()
            return _error(499, "The client went away; the request was cancelled.", "invalid_request_error", "cancelled")
    if ticket.error is not None:
        return _loupe_error(ticket.error)
    answer = ticket.answer
    if answer is None:
        return _error(499, "The request was cancelled.", "invalid_request_error", "cancelled")
    return {**meta, "object": "chat.completion", "choices": [{
        "index": 0, "message": {"role": "assistant", "content": answer.text}, "logprobs": None,
        "finish_reason": "length" if answer.truncated else "stop"}],
        "usage": _usage(answer), "loupe": answer.to_json()}


async def _stream(request: Request, reader: _Reader, meta: dict[str, object], include_usage: bool) -> AsyncIterator[str]:
    ticket = reader.ticket
    chunk = {**meta, "object": "chat.completion.chunk"}

    def delta(content: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {**chunk, "choices": [{"index": 0, "delta": content, "logprobs": None, "finish_reason": finish}]}

    try:
        yield _sse(delta({"role": "assistant", "content": ""}))
        said = ""
        while True:
            if ticket.status == RequestStatus.QUEUED and (where := describe_position(ticket)) != said:
                said = where
                yield f": {where}\n\n"
            pieces, ended = await reader.next()
            for piece in pieces:
                yield _sse(delta({"content": piece}))
            if ended:
                break
            if await request.is_disconnected():
                ticket.cancel()
                return
        if ticket.error is not None or ticket.answer is None:
            failure = ticket.error or GenerationError("The request was cancelled.")
            _status, kind, code, param = _classify(failure)
            yield _sse(chat_request.error_body(str(failure), kind, code, param))
        else:
            answer = ticket.answer
            yield _sse({**delta({}, "length" if answer.truncated else "stop"), "loupe": answer.to_json()})
            if include_usage:
                yield _sse({**chunk, "choices": [], "usage": _usage(answer)})
        yield _sse("[DONE]")
    finally:
        if not ticket.finished:
            ticket.cancel()
