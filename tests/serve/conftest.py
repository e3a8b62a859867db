"""The real server (uvicorn on a free loopback port, in a thread) around the tiny trained run."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import stlm
from stlm.serve import Limits, build_app, listen

SERVE_EXTRA = "stlm serve needs the serve extra (fastapi, uvicorn, prometheus-client)"

LIMITS = Limits(max_prompt_tokens=200, max_tokens_limit=1000)


@dataclass
class Server:
    app: Any
    host: str
    port: int
    model: stlm.Model
    settings: Any  # stlm.serve.ServeSettings

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **kwargs: Any) -> Any:
        openai = pytest.importorskip("openai", reason="the server tests drive it with the official openai client")
        kwargs.setdefault("api_key", self.settings.api_key or "unused")
        return openai.OpenAI(base_url=self.base_url + "/v1", max_retries=0, timeout=60, **kwargs)

    def raw(
        self, method: str, path: str, body: bytes | str | dict | None = None, headers: dict | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One plain HTTP exchange: (status, headers, body)."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            sent = {"Content-Type": "application/json", **(headers or {})}
            if self.settings.api_key and "Authorization" not in sent:
                sent["Authorization"] = f"Bearer {self.settings.api_key}"
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def health(self) -> dict[str, Any]:
        status, _, body = self.raw("GET", "/health")
        assert status == 200
        return json.loads(body)

    def wait_idle(self, timeout: float = 20.0) -> None:
        """Until no row is active or waiting (a cancelled row leaves at the engine's next round)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h["active"] == 0 and h["waiting"] == 0:
                return
            time.sleep(0.02)
        raise AssertionError(f"the server never went idle: {self.health()}")


@contextmanager
def running(model: stlm.Model, **settings: Any) -> Iterator[Server]:
    uvicorn = pytest.importorskip("uvicorn", reason=SERVE_EXTRA)
    from stlm.serve import ServeSettings

    config = ServeSettings(
        model_name=settings.pop("model_name", "tiny"), limits=settings.pop("limits", LIMITS), **settings
    )
    app = build_app(model, config)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.01)
    host, port = sock.getsockname()[:2]
    try:
        yield Server(app, host, port, model, config)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="package")
def tiny_model(tiny_run):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models gain nothing from a second thread (see tests/conftest.py one_thread)
    yield stlm.load(tiny_run, device="cpu")
    torch.set_num_threads(before)


@pytest.fixture(scope="package")
def server(tiny_model) -> Iterator[Server]:
    with running(tiny_model, max_batch=4, queue_size=32) as s:
        yield s
