"""A tiny fake OpenAI-compatible chat endpoint on loopback, for tests of the API client and backends.

`FakeOpenAIServer` listens on 127.0.0.1 on an ephemeral port and answers `POST /v1/chat/completions`
with scripted replies. It records every request (path, headers, JSON body), can fail the first N
requests with given statuses (e.g. 429 then 500), can delay answers (to provoke client timeouts), can
require a bearer key, and serves at most `max_requests` requests before answering 503. Use it as a
context manager; it shuts down on exit. Replies are harmless fixed texts: no test needs real content.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_REPLY = "I cannot help with that request."

Reply = str | Callable[[dict[str, Any]], str]


class FakeOpenAIServer:
    """Scripted OpenAI-compatible server; see the module docstring.

    `reply`: a fixed text or a function of the request body. `failures`: statuses returned, in order,
    for the first requests (each may carry `retry_after` seconds). `usage`: include a `usage` object.
    `require_key`: answer 401 unless `Authorization: Bearer <require_key>` is sent; the 401 body echoes
    the sent key, as some real servers do, so tests can check the client redacts it.
    """

    def __init__(
        self,
        reply: Reply = DEFAULT_REPLY,
        *,
        failures: Sequence[int] = (),
        retry_after: float | None = None,
        delay_s: float = 0.0,
        usage: bool = True,
        require_key: str | None = None,
        finish_reason: str = "stop",
        max_requests: int = 500,
    ) -> None:
        self.reply = reply
        self.failures = list(failures)
        self.retry_after = retry_after
        self.delay_s = delay_s
        self.usage = usage
        self.require_key = require_key
        self.finish_reason = finish_reason
        self.max_requests = max_requests
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> FakeOpenAIServer:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`, the value for `api.base_url`."""
        assert self._server is not None, "start the server first (use it as a context manager)"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def n_requests(self) -> int:
        with self._lock:
            return len(self.requests)

    # ----------------------------------------------------------------- answering

    def _answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            index = len(self.requests)
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                body = None
            self.requests.append({"path": path, "headers": headers, "body": body})
            failure = self.failures.pop(0) if self.failures else None
        if index >= self.max_requests:
            return _json(503, {"error": {"message": "fake server: request limit reached"}})
        if self.delay_s:
            time.sleep(self.delay_s)
        if path != "/v1/chat/completions":
            return _json(404, {"error": {"message": f"no route {path}"}})
        if self.require_key is not None:
            sent = headers.get("authorization", "")
            if sent != f"Bearer {self.require_key}":
                echoed = sent.removeprefix("Bearer ")
                return _json(401, {"error": {"message": f"Incorrect API key provided: {echoed}"}})
        if failure is not None:
            extra = {"Retry-After": f"{self.retry_after:g}"} if self.retry_after is not None else {}
            status, _, payload = _json(failure, {"error": {"message": f"scripted failure {failure}"}})
            return status, extra, payload
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _json(400, {"error": {"message": "body must be a JSON object with messages"}})
        text = self.reply(body) if callable(self.reply) else self.reply
        response: dict[str, Any] = {
            "id": f"chatcmpl-fake-{index}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": self.finish_reason,
                }
            ],
        }
        if self.usage:
            n_prompt = len(json.dumps(body["messages"])) // 4
            n_completion = len(text.split())
            response["usage"] = {
                "prompt_tokens": n_prompt,
                "completion_tokens": n_completion,
                "total_tokens": n_prompt + n_completion,
            }
        return _json(200, response)


def _json(status: int, obj: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {}, json.dumps(obj).encode("utf-8")


def _make_handler(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # http.server calls do_POST
            length = min(int(self.headers.get("Content-Length") or 0), 64 * 1024 * 1024)
            raw = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = server._answer(self.path, headers, raw)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:  # silence the access log
            return

    return Handler
