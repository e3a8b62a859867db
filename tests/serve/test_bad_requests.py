"""Malformed requests: each is a 4xx with an OpenAI-style JSON error, and the server keeps serving."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.serve.conftest import SERVE_EXTRA, running

pytest.importorskip("fastapi", reason=SERVE_EXTRA)
from stlm.serve.app import MAX_BODY_BYTES

C, CHAT = "/v1/completions", "/v1/chat/completions"
OK = {"prompt": "a", "max_tokens": 2}
MSG = [{"role": "user", "content": "hi"}]

# (name, method, path, body, expected status, the field the error names or None)
CASES = [
    ("not json", "POST", C, "{bad", 400, None),
    ("empty body", "POST", C, "", 400, None),
    ("json array", "POST", C, "[1, 2]", 400, None),
    ("json string", "POST", C, '"prompt"', 400, None),
    ("invalid utf-8", "POST", C, b'{"prompt": "\xff\xfe"}', 400, None),
    ("deep nesting", "POST", C, "[" * 100_000 + "]" * 100_000, 400, None),
    ("prompt int", "POST", C, {"prompt": 5}, 400, "prompt"),
    ("prompt empty list", "POST", C, {"prompt": []}, 400, "prompt"),
    ("prompt token ids", "POST", C, {"prompt": [1, 2, 3]}, 400, "prompt"),
    ("prompt null in list", "POST", C, {"prompt": ["a", None]}, 400, "prompt"),
    ("max_tokens negative", "POST", C, {**OK, "max_tokens": -1}, 400, "max_tokens"),
    ("max_tokens zero", "POST", C, {**OK, "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens huge", "POST", C, {**OK, "max_tokens": 10**12}, 400, "max_tokens"),
    ("max_tokens string", "POST", C, {**OK, "max_tokens": "10"}, 400, "max_tokens"),
    ("max_tokens float", "POST", C, {**OK, "max_tokens": 2.5}, 400, "max_tokens"),
    ("max_tokens bool", "POST", C, {**OK, "max_tokens": True}, 400, "max_tokens"),
    ("top_p 2", "POST", C, {**OK, "top_p": 2}, 400, "top_p"),
    ("top_p 0", "POST", C, {**OK, "top_p": 0}, 400, "top_p"),
    ("top_p string", "POST", C, {**OK, "top_p": "high"}, 400, "top_p"),
    ("temperature negative", "POST", C, {**OK, "temperature": -0.5}, 400, "temperature"),
    ("temperature 3", "POST", C, {**OK, "temperature": 3}, 400, "temperature"),
    ("temperature NaN", "POST", C, '{"prompt": "a", "temperature": NaN}', 400, "temperature"),
    ("temperature Infinity", "POST", C, '{"prompt": "a", "temperature": Infinity}', 400, "temperature"),
    ("top_k zero", "POST", C, {**OK, "top_k": 0}, 400, "top_k"),
    ("top_k float", "POST", C, {**OK, "top_k": 1.5}, 400, "top_k"),
    ("n zero", "POST", C, {**OK, "n": 0}, 400, "n"),
    ("n huge", "POST", C, {**OK, "n": 1000}, 400, "n"),
    ("prompts x n too many", "POST", C, {"prompt": ["a"] * 5, "n": 2}, 400, "n"),
    ("seed string", "POST", C, {**OK, "seed": "x"}, 400, "seed"),
    ("seed beyond int64", "POST", C, {**OK, "seed": 2**70}, 400, "seed"),
    ("stop int list", "POST", C, {**OK, "stop": [1]}, 400, "stop"),
    ("stop empty string", "POST", C, {**OK, "stop": ""}, 400, "stop"),
    ("stop five strings", "POST", C, {**OK, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("stream string", "POST", C, {**OK, "stream": "yes"}, 400, "stream"),
    (
        "stream_options without stream",
        "POST",
        C,
        {**OK, "stream_options": {"include_usage": True}},
        400,
        "stream_options",
    ),
    (
        "stream_options unknown key",
        "POST",
        C,
        {**OK, "stream": True, "stream_options": {"x": 1}},
        400,
        "stream_options",
    ),
    (
        "include_usage string",
        "POST",
        C,
        {**OK, "stream": True, "stream_options": {"include_usage": "y"}},
        400,
        "stream_options.include_usage",
    ),
    ("logprobs 99", "POST", C, {**OK, "logprobs": 99}, 400, "logprobs"),
    ("logprobs while streaming", "POST", C, {**OK, "logprobs": 1, "stream": True}, 400, "logprobs"),
    ("presence_penalty", "POST", C, {**OK, "presence_penalty": 1.0}, 400, "presence_penalty"),
    ("echo string", "POST", C, {**OK, "echo": "no"}, 400, "echo"),
    ("unknown field", "POST", C, {**OK, "best_of": 3}, 400, "best_of"),
    ("unknown model", "POST", C, {**OK, "model": "gpt-4"}, 404, "model"),
    ("model not a string", "POST", C, {**OK, "model": ["tiny"]}, 400, "model"),
    ("oversized prompt", "POST", C, {"prompt": "x" * 500}, 400, "prompt"),
    ("oversized body", "POST", C, {"prompt": "x" * (MAX_BODY_BYTES + 1)}, 413, None),
    ("chat without messages", "POST", CHAT, {"max_tokens": 2}, 400, "messages"),
    ("chat messages empty", "POST", CHAT, {"messages": []}, 400, "messages"),
    ("chat messages string", "POST", CHAT, {"messages": "hi"}, 400, "messages"),
    ("chat unknown role", "POST", CHAT, {"messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0]"),
    ("chat content int", "POST", CHAT, {"messages": [{"role": "user", "content": 3}]}, 400, "messages[0].content"),
    (
        "chat image part",
        "POST",
        CHAT,
        {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
        400,
        "messages[0].content",
    ),
    (
        "chat both max fields",
        "POST",
        CHAT,
        {"messages": MSG, "max_tokens": 2, "max_completion_tokens": 2},
        400,
        "max_completion_tokens",
    ),
    ("chat top_logprobs alone", "POST", CHAT, {"messages": MSG, "top_logprobs": 2}, 400, "top_logprobs"),
    (
        "chat top_logprobs 50",
        "POST",
        CHAT,
        {"messages": MSG, "logprobs": True, "top_logprobs": 50},
        400,
        "top_logprobs",
    ),
    ("chat tools", "POST", CHAT, {"messages": MSG, "tools": []}, 400, "tools"),
    ("chat oversized", "POST", CHAT, {"messages": [{"role": "user", "content": "y" * 500}]}, 400, "messages"),
    ("GET a POST route", "GET", C, None, 405, None),
    ("unknown path", "GET", "/v1/embeddings", None, 404, None),
]


@pytest.mark.parametrize("name, method, path, body, status, param", CASES, ids=[c[0] for c in CASES])
def test_malformed_request_is_a_json_4xx(server, name, method, path, body, status, param):
    got, headers, raw = server.raw(method, path, body)
    assert got == status, raw
    assert headers["content-type"] == "application/json"
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and error["message"] and "Traceback" not in error["message"]
    assert "\n" not in error["message"]


def test_the_server_keeps_serving_after_every_bad_request(server):
    assert len(CASES) >= 40
    for _, method, path, body, _, _ in CASES:
        server.raw(method, path, body)
    status, _, raw = server.raw("POST", C, OK)
    assert status == 200 and json.loads(raw)["usage"]["completion_tokens"] >= 1
    server.wait_idle()


def test_a_client_leaving_mid_stream_frees_its_slot(server):
    before = completion_tokens(server)
    sock = socket.create_connection((server.host, server.port))
    body = json.dumps({"prompt": "a", "max_tokens": 1000, "temperature": 0, "stream": True}).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")  # headers (and maybe the first chunk): it is generating
    sock.close()
    server.wait_idle()
    assert completion_tokens(server) - before < 900  # stopped early, not run to max_tokens or the context's end
    status, _, _ = server.raw("POST", C, OK)
    assert status == 200


def completion_tokens(server) -> float:
    _, _, raw = server.raw("GET", "/metrics")
    line = next(x for x in raw.decode().splitlines() if x.startswith("stlm_completion_tokens_total"))
    return float(line.split()[1])


def test_a_full_queue_answers_429_a_wrong_key_401_and_waiting_clients_may_leave(tiny_model):
    with running(tiny_model, max_batch=1, queue_size=2, api_key="sekret") as server:
        status, _, raw = server.raw("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
        status, _, _ = server.raw("POST", C, OK, headers={"Authorization": ""})
        assert status == 401
        assert server.raw("GET", "/health")[0] == 200  # health and metrics need no key
        engine = server.app.state.engine
        engine.pause()  # rows queue but nothing is generated: the queue fills deterministically
        waiting = [open_stream(server, {"prompt": "a", "max_tokens": 5, "stream": True}) for _ in range(2)]
        deadline = time.monotonic() + 20
        while server.health()["waiting"] < 2:
            assert time.monotonic() < deadline
        status, _, raw = server.raw("POST", C, OK)
        assert status == 429 and json.loads(raw)["error"]["code"] == "queue_full"
        for sock in waiting:  # both clients give up while queued: their rows leave without being generated
            sock.close()
        server.wait_idle()
        engine.resume()
        status, _, raw = server.raw("POST", C, OK)
        assert status == 200


def open_stream(server, body: dict) -> socket.socket:
    sock = socket.create_connection((server.host, server.port))
    data = json.dumps(body).encode()
    sock.sendall(
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {server.settings.api_key}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock
