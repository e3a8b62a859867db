"""`stlm serve`: an OpenAI-compatible HTTP server for one checkpoint, with a browser playground.

    protocol.py   request bodies checked into typed requests; OpenAI-shaped errors
    engine.py     the worker thread that owns the model: continuous batching of every live choice
    app.py        FastAPI routes, server-sent events, API key, Prometheus metrics
    static/       the playground page served at / (plain HTML, CSS and JS; no build step)

    import stlm
    from stlm.serve import ServeSettings, Limits, listen, run

    model = stlm.load("runs/tiny")
    run(model, ServeSettings("tiny", Limits(max_prompt_tokens=1024, max_tokens_limit=512)), listen("127.0.0.1", 8000))

FastAPI, uvicorn and prometheus-client are the `serve` extra (`pip install 'stlm[serve]'`);
they are imported only when a server is built.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

from stlm.errors import UserError
from stlm.serve.protocol import Limits

if TYPE_CHECKING:
    from fastapi import FastAPI

    from stlm.api import Model
    from stlm.serve.app import ServeSettings

__all__ = ["Limits", "ServeSettings", "build_app", "listen", "run"]


def __getattr__(name: str) -> object:
    if name == "ServeSettings":  # lives with the app, which needs the optional packages
        return _app_module().ServeSettings
    raise AttributeError(name)


def build_app(model: Model, settings: ServeSettings) -> FastAPI:
    return _app_module().build_app(model, settings)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the model loads: an address in use is one line at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = "the address is in use (another server?)" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
        raise UserError(f"cannot listen on {host}:{port}: {reason}") from None
    return sock


def run(model: Model, settings: ServeSettings, sock: socket.socket, *, log_level: str = "info") -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM), on a socket from `listen`; an interruption ends in
    KeyboardInterrupt, as in every stlm command."""
    import uvicorn

    class Server(uvicorn.Server):
        signalled = False

        def handle_exit(self, sig, frame) -> None:  # type: ignore[no-untyped-def]
            self.signalled = True
            super().handle_exit(sig, frame)

    app = build_app(model, settings)
    config = uvicorn.Config(app, log_level=log_level, access_log=log_level == "debug", timeout_graceful_shutdown=2)
    server = Server(config)
    server.run(sockets=[sock])  # re-raises a captured Ctrl-C after shutting down, but not always:
    if server.signalled:  # asyncio's own SIGINT handling at the end of the loop can swallow it
        raise KeyboardInterrupt


def _app_module():  # type: ignore[no-untyped-def]
    try:
        from stlm.serve import app
    except ImportError as exc:
        raise UserError(
            f"stlm serve needs the serve extra ({exc.name} is missing): pip install 'stlm[serve]'"
        ) from None
    return app
