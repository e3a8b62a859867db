"""`stlm serve RUN`: the command starts a server that answers; bad input is one line, exit 2."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from stlm.cli.main import main
from tests.serve.conftest import SERVE_EXTRA

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("stlm serve: error: "), err
    return err


def test_a_missing_run_and_a_port_in_use_are_one_line(tiny_run, tmp_path, capsys):
    assert f"{tmp_path / 'no-run'} does not exist" in one_line_error(capsys, "serve", tmp_path / "no-run", "--port", 0)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        err = one_line_error(capsys, "serve", tiny_run, "--port", port, "--device", "cpu")
        assert f"cannot listen on 127.0.0.1:{port}: the address is in use" in err


def test_the_command_serves_until_interrupted(tiny_run):
    """Ctrl-C stops it as it stops every stlm command: `stlm serve: interrupted`, exit 130."""
    pytest.importorskip("uvicorn", reason=SERVE_EXTRA)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "stlm", "serve", str(tiny_run), "--port", "0", "--device", "cpu"]
    proc = subprocess.Popen(
        [*cmd, "--log-level", "warning", "--model-name", "m"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(r"serving m \(decoder\) on http://127\.0\.0\.1:(\d+)/  \(API at /v1\)\n", line)
        assert match, line
        conn = http.client.HTTPConnection("127.0.0.1", int(match[1]), timeout=30)
        conn.request("POST", "/v1/completions", body=json.dumps({"model": "m", "prompt": "a", "max_tokens": 3}))
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["usage"]["completion_tokens"] >= 1
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "stlm serve: interrupted"
