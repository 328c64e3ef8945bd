"""Start ``features serve`` as a real process on a free loopback port; small HTTP helpers."""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cli_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Server:
    """``features serve STORE --port 0 ...`` in a subprocess; ``url`` once it listens."""

    def __init__(self, store, *args, startup=120.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "features", "serve", str(store), "--host", "127.0.0.1",
             "--port", "0", *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
        self.url = self._wait_for_address(startup)

    def _wait_for_address(self, timeout):
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=0.5):
                line = self.proc.stdout.readline()
                if "http://" in line:
                    return line.strip().rsplit(" ", 1)[-1]
                if not line and self.proc.poll() is not None:
                    break
        self.stop()
        raise AssertionError(f"features serve did not start: {self.proc.stderr.read()}")

    def stop(self, timeout=20) -> tuple[int, str]:
        """SIGTERM, wait; (exit code, stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.returncode, self.proc.stderr.read()


def request(url, data=None, method=None, headers=None, timeout=60):
    """(status, headers, body bytes) of one HTTP request; errors are answers, not raised."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def get_json(url, **kw):
    status, headers, body = request(url, **kw)
    return status, json.loads(body)


def multipart(field, filename, data, extra=()):
    """(body, content type) of a multipart/form-data upload."""
    boundary = "----features-test-boundary"
    parts = []
    for name, value in extra:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                     f"{value}\r\n".encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
                 f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
                 .encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
