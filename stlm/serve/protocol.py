"""The OpenAI request bodies the server takes, checked field by field into typed requests.

Every mistake is an `APIError` carrying the HTTP status and the OpenAI error
body (`{"error": {"message", "type", "param", "code"}}`), so a client sees
which field was wrong and why, never a traceback. Fields OpenAI defines but
stlm cannot honour (penalties, logit_bias, tools) are refused by name rather
than silently ignored; unknown fields are refused as OpenAI refuses them.

Chat for a base (causal) model is a plain transcript, one line per message,
ending where the assistant speaks next:

    System: You are terse.
    User: Name a colour.
    Assistant: Blue.
    User: Another?
    Assistant:

and generation also stops at "\\nUser:" (the model would otherwise write the
user's next turn). A model that maps input to output reads the last user
message alone: an encoder-decoder (T5) as its encoder input, a fine-tuned
decoder followed by the separator it was fine-tuned with (as `stlm finetune`
prompts it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

CHAT_ROLES = ("system", "user", "assistant")
CHAT_STOP = "\nUser:"
MAX_STOPS = 4  # as OpenAI
MAX_STOP_CHARS = 64
MAX_LOGPROBS = 5  # completions: alternatives per token, as OpenAI
MAX_TOP_LOGPROBS = 20  # chat
MAX_TEMPERATURE = 2.0

# Fields each endpoint takes; `model` and `user` are accepted everywhere (the served model, ignored).
COMPLETION_FIELDS = frozenset(
    {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "stop", "seed", "n", "stream"}
    | {"stream_options", "logprobs", "echo", "user", "presence_penalty", "frequency_penalty"}
)
CHAT_FIELDS = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop", "seed"}
    | {"n", "stream", "stream_options", "logprobs", "top_logprobs", "user", "presence_penalty", "frequency_penalty"}
)


class APIError(Exception):
    """An HTTP error with the OpenAI body; `param` names the request field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (`stlm serve` flags)."""

    max_prompt_tokens: int  # ids after tokenizing, BOS/EOS included; at most the model's context
    max_tokens_limit: int  # the largest max_tokens a request may ask for
    max_n: int = 8  # choices per request (prompts x n for completions)
    default_max_tokens: int = 16  # completions, as OpenAI; chat defaults to max_tokens_limit


@dataclass(frozen=True)
class Sampling:
    max_tokens: int
    temperature: float  # 0 is greedy
    top_p: float | None
    top_k: int | None
    stop: tuple[str, ...]
    seed: int | None  # choice i of a request samples with seed + i
    logprobs: int | None  # alternatives listed per token; None: no logprobs


@dataclass(frozen=True)
class GenerationRequest:
    chat: bool
    prompts: tuple[str, ...]  # text before tokenizing; chat: the rendered transcript (or T5 input)
    n: int
    sampling: Sampling
    stream: bool
    include_usage: bool
    echo: bool  # completions: the prompt is repeated before each choice's text


def parse_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the request body must be a JSON object, got {type(body).__name__}", code="invalid_json")
    return body


def parse_completion(body: dict[str, Any], limits: Limits) -> GenerationRequest:
    _check_fields(body, COMPLETION_FIELDS)
    prompt = body.get("prompt", "")
    if isinstance(prompt, str):
        prompts: tuple[str, ...] = (prompt,)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = tuple(prompt)
    else:
        raise APIError(400, "prompt must be a string or a non-empty list of strings", param="prompt")
    logprobs = _optional_int(body, "logprobs", 0, MAX_LOGPROBS)
    echo = _bool(body, "echo", False)
    sampling = _sampling(body, limits, limits.default_max_tokens, logprobs, extra_stop=())
    return _request(body, limits, False, prompts, sampling, echo)


def parse_chat(body: dict[str, Any], limits: Limits, *, task_suffix: str | None = None) -> GenerationRequest:
    """task_suffix None: a base causal model (the transcript); a string: a model that maps input to output.

    A fine-tuned decoder reads its input followed by the separator it was fine-tuned with;
    an encoder-decoder reads its input alone (suffix "").
    """
    _check_fields(body, CHAT_FIELDS)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "messages must be a non-empty list of {role, content} objects", param="messages")
    turns = []
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            raise APIError(400, f"{param} must be an object with role one of {', '.join(CHAT_ROLES)}", param=param)
        content = message.get("content")
        if isinstance(content, list):  # the parts form: [{"type": "text", "text": ...}, ...]
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise APIError(400, f"{param}.content parts must all be text parts", param=f"{param}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"{param}.content must be a string", param=f"{param}.content")
        turns.append((message["role"], content))
    if task_suffix is not None:
        users = [content for role, content in turns if role == "user"]
        if not users:
            raise APIError(400, "messages hold no user message for the model to answer", param="messages")
        prompt, extra_stop = users[-1] + task_suffix, ()
    else:
        prompt = "".join(f"{role.capitalize()}: {content}\n" for role, content in turns) + "Assistant:"
        extra_stop = (CHAT_STOP,)
    if "max_completion_tokens" in body and "max_tokens" in body:
        raise APIError(400, "give max_tokens or max_completion_tokens, not both", param="max_completion_tokens")
    if "max_completion_tokens" in body:
        body = {**body, "max_tokens": body["max_completion_tokens"]}
    logprobs = None
    if _bool(body, "logprobs", False):
        logprobs = _optional_int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS) or 0
    elif body.get("top_logprobs") is not None:
        raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
    sampling = _sampling(body, limits, limits.max_tokens_limit, logprobs, extra_stop=extra_stop)
    return _request(body, limits, True, (prompt,), sampling, False)


def _request(
    body: dict[str, Any], limits: Limits, chat: bool, prompts: tuple[str, ...], sampling: Sampling, echo: bool
) -> GenerationRequest:
    n = _int(body, "n", 1, 1, limits.max_n)
    if n * len(prompts) > limits.max_n:
        raise APIError(
            400, f"{len(prompts)} prompts x n {n} asks for more than {limits.max_n} choices in one request", param="n"
        )
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise APIError(400, "stream_options must be an object with only include_usage", param="stream_options")
    if options is not None and not stream:
        raise APIError(400, "stream_options is only allowed with stream: true", param="stream_options")
    include_usage = _bool(options or {}, "include_usage", False, "stream_options.include_usage")
    if stream and sampling.logprobs is not None:
        raise APIError(400, "logprobs are not offered while streaming; ask without stream", param="logprobs")
    return GenerationRequest(chat, prompts, n, sampling, stream, include_usage, echo)


def _sampling(
    body: dict[str, Any], limits: Limits, default_max: int, logprobs: int | None, *, extra_stop: tuple[str, ...]
) -> Sampling:
    for name in ("presence_penalty", "frequency_penalty"):
        value = _optional_number(body, name, -2.0, 2.0)
        if value:
            raise APIError(400, f"{name} is not supported by stlm serve (only 0)", param=name)
    max_tokens = _optional_int(body, "max_tokens", 1, None)
    if max_tokens is None:
        max_tokens = min(default_max, limits.max_tokens_limit)
    elif max_tokens > limits.max_tokens_limit:
        raise APIError(
            400,
            f"max_tokens {max_tokens} is above this server's limit of {limits.max_tokens_limit}",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    temperature = _optional_number(body, "temperature", 0.0, MAX_TEMPERATURE)
    top_p = _optional_number(body, "top_p", 0.0, 1.0)
    if top_p == 0:
        raise APIError(400, "top_p must be in (0, 1]", param="top_p")
    return Sampling(
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        top_p=top_p,
        top_k=_optional_int(body, "top_k", 1, None),
        stop=_stops(body.get("stop")) + extra_stop,
        seed=_optional_int(body, "seed", -(2**63), 2**63 - 1),
        logprobs=logprobs,
    )


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise APIError(400, "stop must be a string or a list of strings", param="stop")
    if len(stops) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise APIError(400, f"stop takes 1 to {MAX_STOPS} strings of 1 to {MAX_STOP_CHARS} characters", param="stop")
    return tuple(stops)


def _check_fields(body: dict[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise APIError(400, f"unrecognized request argument: {unknown[0]}", param=unknown[0], code="unknown_parameter")


def _bool(body: dict[str, Any], name: str, default: bool, param: str | None = None) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise APIError(400, f"{param or name} must be true or false, got {_show(value)}", param=param or name)
    return value


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int | None) -> int:
    value = _optional_int(body, name, low, high)
    return default if value is None else value


def _optional_int(body: dict[str, Any], name: str, low: int, high: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise APIError(400, f"{name} must be an integer, got {_show(value)}", param=name)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise APIError(400, f"{name} must be {bounds}, got {value}", param=name)
    return value


def _optional_number(body: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise APIError(400, f"{name} must be a number, got {_show(value)}", param=name)
    if not (math.isfinite(value) and low <= value <= high):
        raise APIError(400, f"{name} must be in [{low:g}, {high:g}], got {value}", param=name)
    return float(value)


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."
