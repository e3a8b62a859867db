"""The HTTP side: OpenAI-compatible routes, server-sent events, errors, API key, metrics, the playground.

    GET  /                      the playground page (static, shipped in the package)
    GET  /health                {"status": "ok", ...}; no key needed
    GET  /metrics               Prometheus text; no key needed
    GET  /v1/models             the one model served
    POST /v1/completions        text completion (prompt: a string or a list of strings)
    POST /v1/chat/completions   chat (see `protocol` for the transcript a base model reads)

Every error, including a bad path or method and a bug, is JSON in OpenAI's
shape; a handler never lets a traceback reach the client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import prometheus_client as prom
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from stlm.api import Model
from stlm.serve.engine import Done, Engine, Piece, QueueFull, TokenLogprob, request_rows
from stlm.serve.protocol import APIError, GenerationRequest, Limits, parse_chat, parse_completion, parse_json

log = logging.getLogger("stlm.serve")

MAX_BODY_BYTES = 1 << 20  # a prompt is limited in tokens long before this
DISCONNECT_POLL_S = 0.25  # how often a waiting non-streamed request checks that its client is still there


@dataclass(frozen=True)
class ServeSettings:
    """Everything `stlm serve` sets besides where it listens."""

    model_name: str
    limits: Limits
    max_batch: int = 8  # rows (choices) generated at once
    queue_size: int = 64  # rows waiting for a slot; beyond this, 429
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter("stlm_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.prompt_tokens = prom.Counter("stlm_prompt_tokens", "prompt ids read", registry=r)
        self.completion_tokens = prom.Counter("stlm_completion_tokens", "ids generated", registry=r)
        self.latency = prom.Histogram("stlm_request_seconds", "time to the whole answer", ["route"], registry=r)
        self.first_token = prom.Histogram("stlm_time_to_first_token_seconds", "time to the first text", registry=r)
        active = prom.Gauge("stlm_active_rows", "choices being generated", registry=r)
        waiting = prom.Gauge("stlm_waiting_rows", "choices waiting for a slot", registry=r)
        active.set_function(lambda: engine.counts()[0])
        waiting.set_function(lambda: engine.counts()[1])
        engine.on_tokens = self.completion_tokens.inc


def build_app(model: Model, settings: ServeSettings) -> FastAPI:
    engine = Engine(model, max_batch=settings.max_batch, queue_size=settings.queue_size)
    metrics = Metrics(engine)
    created = int(time.time())
    task_suffix = chat_task_suffix(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="stlm", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine
    app.state.model = model

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return JSONResponse(APIError(exc.status_code, message, code=code).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request failed")
        body = APIError(500, "the server failed on this request; see its log", type="server_error").body()
        return JSONResponse(body, status_code=500)

    app.add_middleware(CountRequests, metrics=metrics)

    def check_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.api_key}".encode()):
            raise APIError(401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key")

    async def read_body(request: Request) -> dict[str, Any]:
        check_key(request)
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY_BYTES:
                raise APIError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes", code="body_too_large")
        body = parse_json(bytes(raw))
        name = body.get("model")
        if name is not None and not isinstance(name, str):
            raise APIError(400, "model must be a string (the id /v1/models lists)", param="model")
        if name is not None and name != settings.model_name:
            raise APIError(
                404,
                f"the model {name!r} does not exist; this server serves {settings.model_name!r}",
                param="model",
                code="model_not_found",
            )
        return body

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> HTMLResponse:
        page = resources.files("stlm.serve").joinpath("static/playground.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        active, waiting = engine.counts()
        return {"status": "ok", "model": settings.model_name, "active": active, "waiting": waiting}

    @app.get("/metrics")
    async def metrics_text() -> Response:
        return Response(prom.generate_latest(metrics.registry), media_type=prom.CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        card = {"id": settings.model_name, "object": "model", "created": created, "owned_by": "stlm"}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        body = await read_body(request)
        parsed = parse_completion(body, settings.limits)
        return await generate(request, parsed, "/v1/completions")

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        body = await read_body(request)
        parsed = parse_chat(body, settings.limits, task_suffix=task_suffix)
        return await generate(request, parsed, "/v1/chat/completions")

    async def generate(request: Request, parsed: GenerationRequest, route: str) -> Response:
        start = time.perf_counter()
        prompt_ids = [encode(model, settings.limits, parsed, i) for i in range(len(parsed.prompts))]
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Piece | Done] = asyncio.Queue()
        rows = request_rows(prompt_ids, parsed.n, parsed.sampling, loop, events, stream=parsed.stream)
        try:
            engine.submit(rows)
        except QueueFull:
            raise APIError(
                429, "the server is busy: its queue is full; retry shortly", type="rate_limit_error", code="queue_full"
            ) from None
        n_prompt = sum(len(ids) for ids in prompt_ids)
        metrics.prompt_tokens.inc(n_prompt)
        answer = Answer(parsed, settings.model_name, n_prompt, len(rows))
        if parsed.stream:
            return StreamingResponse(
                stream(answer, events, rows, start, route),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            while not answer.finished:
                try:
                    event = await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        engine.cancel(rows)
                        return Response(status_code=499)
                    continue
                answer.take(event)
        finally:
            engine.cancel([r for r in rows if not r.done])
        metrics.latency.labels(route).observe(time.perf_counter() - start)
        if answer.error:
            raise APIError(500, "generation failed on the server; see its log", type="server_error")
        return JSONResponse(answer.whole())

    async def stream(
        answer: Answer, events: asyncio.Queue[Piece | Done], rows: list[Any], start: float, route: str
    ) -> AsyncIterator[str]:
        first = True
        try:
            for chunk in answer.opening():
                yield sse(chunk)
            while not answer.finished:
                event = await events.get()
                if first and isinstance(event, Piece):
                    metrics.first_token.observe(time.perf_counter() - start)
                    first = False
                for chunk in answer.take(event):
                    yield sse(chunk)
            if answer.error:
                yield sse(APIError(500, "generation failed on the server; see its log", type="server_error").body())
            elif answer.parsed.include_usage:
                yield sse(answer.usage_chunk())
            yield "data: [DONE]\n\n"
            metrics.latency.labels(route).observe(time.perf_counter() - start)
        finally:  # also when the client goes away mid-stream (the task is cancelled): free its slots
            engine.cancel([r for r in rows if not r.done])

    return app


ROUTES = frozenset({"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"})


class CountRequests:
    """Counts answers by route and status: plain ASGI, so streamed responses pass through unbuffered."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.metrics.requests.labels(route, str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)


def chat_task_suffix(model: Model) -> str | None:
    """What follows the user's message for a model that maps input to output; None for a base decoder.

    An encoder-decoder reads the message alone; a fine-tuned decoder reads it
    followed by its fine-tuning separator (the run record's finetune.task.separator).
    """
    if model.family.encoder_decoder:
        return ""
    task = model.config.get("finetune", {}).get("task")
    return task.get("separator", "") if isinstance(task, dict) else None


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def encode(model: Model, limits: Limits, parsed: GenerationRequest, index: int) -> list[int]:
    """A prompt's ids, within the server's limit and the model's context."""
    ids = model.family.prompt_ids(model.tokenizer, parsed.prompts[index])
    context = model.family.max_len(model.loaded.model_config)
    limit = limits.max_prompt_tokens if context is None else min(limits.max_prompt_tokens, context)
    if len(ids) > limit:
        if parsed.chat:
            which, param = "the messages are", "messages"
        elif len(parsed.prompts) > 1:
            which, param = f"prompt {index} is", f"prompt[{index}]"
        else:
            which, param = "the prompt is", "prompt"
        raise APIError(
            400,
            f"{which} {len(ids)} tokens; this server takes at most {limit}",
            param=param,
            code="context_length_exceeded",
        )
    return ids


class Answer:
    """One request's choices as their events arrive, shaped as OpenAI's responses and stream chunks."""

    def __init__(self, parsed: GenerationRequest, model_name: str, prompt_tokens: int, n_rows: int) -> None:
        self.parsed = parsed
        self.model_name = model_name
        self.prompt_tokens = prompt_tokens
        self.id = ("chatcmpl-" if parsed.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.texts = [parsed.prompts[i // parsed.n] if parsed.echo else "" for i in range(n_rows)]
        self.done: list[Done | None] = [None] * n_rows
        self.error = False

    @property
    def finished(self) -> bool:
        return all(d is not None for d in self.done)

    @property
    def completion_tokens(self) -> int:
        return sum(d.completion_tokens for d in self.done if d is not None)

    def usage(self) -> dict[str, int]:
        n = self.completion_tokens
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": n, "total_tokens": self.prompt_tokens + n}

    def take(self, event: Piece | Done) -> list[dict[str, Any]]:
        """Record an event; returns the stream chunks it makes."""
        if isinstance(event, Piece):
            self.texts[event.row] += event.text
            return [self._chunk(event.row, event.text, None)]
        self.done[event.row] = event
        if event.error:
            self.error = True
            return []
        return [self._chunk(event.row, None, event.finish_reason)]

    # --- whole responses -----------------------------------------------------------------------

    def whole(self) -> dict[str, Any]:
        choices = []
        for i, (text, done) in enumerate(zip(self.texts, self.done)):
            assert done is not None
            if self.parsed.chat:
                choice = {"index": i, "message": {"role": "assistant", "content": text}}
                choice["logprobs"] = None if done.logprobs is None else {"content": chat_logprobs(done.logprobs)}
            else:
                offset = len(self.parsed.prompts[i // self.parsed.n]) if self.parsed.echo else 0
                choice = {"index": i, "text": text}
                choice["logprobs"] = None if done.logprobs is None else completion_logprobs(done.logprobs, offset)
            choice["finish_reason"] = done.finish_reason
            choices.append(choice)
        return {**self._head(), "object": self._object(False), "choices": choices, "usage": self.usage()}

    # --- stream chunks -------------------------------------------------------------------------

    def opening(self) -> list[dict[str, Any]]:
        """Chat streams start with the assistant's role; completion streams with an echoed prompt."""
        if self.parsed.chat:
            return [self._chunk(i, "", None, role=True) for i in range(len(self.done))]
        return [self._chunk(i, t, None) for i, t in enumerate(self.texts) if t]

    def usage_chunk(self) -> dict[str, Any]:
        return {**self._head(), "object": self._object(True), "choices": [], "usage": self.usage()}

    def _chunk(self, row: int, text: str | None, finish: str | None, *, role: bool = False) -> dict[str, Any]:
        if self.parsed.chat:
            delta: dict[str, Any] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice = {"index": row, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": row, "text": text or "", "logprobs": None, "finish_reason": finish}
        chunk = {**self._head(), "object": self._object(True), "choices": [choice]}
        if self.parsed.include_usage:
            chunk["usage"] = None
        return chunk

    def _head(self) -> dict[str, Any]:
        return {"id": self.id, "created": self.created, "model": self.model_name, "system_fingerprint": "stlm"}

    def _object(self, chunk: bool) -> str:
        if self.parsed.chat:
            return "chat.completion.chunk" if chunk else "chat.completion"
        return "text_completion"


def token_text(token: bytes) -> str:
    """A token's text; bytes that are not whole UTF-8 characters are spelled as OpenAI does (bytes:\\xNN)."""
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in token)


def completion_logprobs(tokens: list[TokenLogprob], offset: int) -> dict[str, Any]:
    offsets, position = [], offset
    for t in tokens:
        offsets.append(position)
        position += len(token.decode("utf-8", "replace")) if (token := t.token) else 0
    return {
        "tokens": [token_text(t.token) for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{token_text(b): lp for b, lp in t.top} for t in tokens],
        "text_offset": offsets,
    }


def chat_logprobs(tokens: list[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": token_text(t.token),
            "logprob": t.logprob,
            "bytes": list(t.token),
            "top_logprobs": [{"token": token_text(b), "logprob": lp, "bytes": list(b)} for b, lp in t.top],
        }
        for t in tokens
    ]
