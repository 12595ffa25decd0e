"""A small client for OpenAI-compatible `/v1/chat/completions` endpoints, with retries and a response cache.

It serves every stage that talks to an API: the API inference backend (`toolshift.inference.api`) and
API judges. Any server speaking the OpenAI chat-completions protocol works (OpenAI, vLLM's
`vllm serve`, llama.cpp's server, LiteLLM, ...). Standard library only (`urllib`).

- **Key.** Read from the environment variable *named* by `ApiSettings.api_key_env` (default
  `OPENAI_API_KEY`) at the moment a request must be sent, and sent as `Authorization: Bearer ...`.
  A missing variable raises ConfigError naming the variable, never a value. The key is never stored
  on the client, logged, cached or put into an exception message; should a server echo it back, it is
  replaced by `[redacted]` before anything is written. `api_key_env: null` sends no key (a local
  server started without one).
- **Determinism.** Requests ask for `temperature` 0 (configurable; `null` omits it for models that
  reject it), `n` 1, no streaming and a fixed token budget. Servers do not promise identical output
  for identical requests even at temperature 0; the cache is what makes reruns identical.
- **Cache.** A response is stored under `cache_dir/<k[:2]>/<k>.json`, where `k` is the sha256 of the
  canonical JSON (sorted keys, no spaces, UTF-8) of the endpoint URL and the request body. The key is
  not part of either. A rerun therefore sends nothing, and needs no key, when every request is cached.
- **Retries.** HTTP 408, 409, 429 and 5xx, timeouts and connection failures are retried with exponential
  backoff (`backoff_s * 2**i`, capped at `max_backoff_s`, at least a server's `Retry-After`) at most
  `max_retries` times and within `max_total_s` seconds per request; other statuses fail at once with
  the server's message. Redirects are not followed (they would move a POST and its key elsewhere).
  A reply whose `message.content` is null (no text, no `refusal`, no content filter) is a failed
  request too: retried likewise, never cached, and an ApiError when retries run out; a cache entry
  holding one is asked again.

The settings (`ApiSettings`), the result (`ChatResult`) and the reading of a response are in
`toolshift.inference.api_protocol`; they are importable from here too.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from toolshift.errors import ConfigError
from toolshift.files import atomic_path
from toolshift.inference.api_protocol import (
    DEFAULT_KEY_ENV,
    ApiError,
    ApiSettings,
    ChatResult,
    chat_result,
    missing_text,
    parse_response,
)

__all__ = [
    "CACHE_VERSION",
    "DEFAULT_KEY_ENV",
    "MAX_RESPONSE_BYTES",
    "REDACTED",
    "RETRY_STATUSES",
    "ApiError",
    "ApiSettings",
    "ChatClient",
    "ChatResult",
    "canonical_json",
]

log = logging.getLogger(__name__)

CACHE_VERSION = "toolshift-chat-cache-v1"
"""Part of every cache key: bump it when the meaning of a cached entry changes."""
RETRY_STATUSES: frozenset[int] = frozenset({408, 409, 429})
"""Statuses retried besides every 5xx."""
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
REDACTED = "[redacted]"
_MIN_REDACT_LEN = 8
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no whitespace, UTF-8 (the cache-key input)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None  # urllib then raises HTTPError with the 3xx status


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ChatClient:
    """Sends chat-completion requests to one endpoint and model (thread-safe; see the module docstring).

    `environ`, `sleep` and `clock` are injectable for tests (a fake clock makes backoff instantaneous).
    `n_sent` counts HTTP requests actually sent (retries included); `n_cached` counts cache hits.
    """

    def __init__(
        self,
        settings: ApiSettings,
        *,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._environ = os.environ if environ is None else environ
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self.n_sent = 0
        self.n_cached = 0
        handlers: list[Any] = [_NoRedirect()]
        host = urllib.parse.urlsplit(settings.base_url).hostname or ""
        if host in _LOOPBACK:
            handlers.append(urllib.request.ProxyHandler({}))  # a local server is never reached via a proxy
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:
        return f"ChatClient({self.settings.endpoint!r}, model={self.settings.model!r})"

    # ----------------------------------------------------------------- request building

    def request_body(
        self, messages: Sequence[Mapping[str, Any]], *, max_tokens: int, **params: Any
    ) -> dict[str, Any]:
        """The JSON body for `messages`: model, messages, n=1, no stream, the token budget,
        temperature/seed from the settings, then `extra_body` and `params` (which win)."""
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ConfigError(f"max_tokens: expected an integer >= 1, got {max_tokens!r}")
        s = self.settings
        body: dict[str, Any] = {"model": s.model, "messages": list(messages), "n": 1, "stream": False}
        body[s.max_tokens_param] = max_tokens
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.seed is not None:
            body["seed"] = s.seed
        body.update(s.extra_body)
        body.update(params)
        return body

    def cache_key(self, body: Mapping[str, Any]) -> str:
        """sha256 of the canonical JSON of (cache version, endpoint URL, request body); no key in it."""
        payload = {"version": CACHE_VERSION, "endpoint": self.settings.endpoint, "request": body}
        return hashlib.sha256(canonical_json(payload)).hexdigest()

    # ----------------------------------------------------------------- the key

    def _api_key(self) -> str | None:
        name = self.settings.api_key_env
        if name is None:
            return None
        value = self._environ.get(name)
        if value is None or not value.strip():
            raise ConfigError(
                f"environment variable {name} is not set; export the API key for "
                f"{self.settings.base_url} in it (or name another variable in api.api_key_env)"
            )
        return value.strip()

    def _redact(self, text: str) -> str:
        """`text` with the key (if one is configured and set) replaced by [redacted]."""
        name = self.settings.api_key_env
        value = (self._environ.get(name) or "").strip() if name else ""
        if len(value) >= _MIN_REDACT_LEN and value in text:
            text = text.replace(value, REDACTED)
        return text

    # ----------------------------------------------------------------- cache

    def _cache_path(self, key: str) -> Path | None:
        d = self.settings.cache_dir
        return None if d is None else d / key[:2] / f"{key}.json"

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            body = entry["response"]
            parse_response(body)
        except (OSError, ValueError, KeyError, TypeError, ApiError):
            log.warning("cache entry %s is unreadable; asking the server again", path)
            return None
        return body

    def _cache_put(self, key: str, body: dict[str, Any]) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        entry = {"cache_key": key, "version": CACHE_VERSION, "model": self.settings.model, "response": body}
        text = self._redact(json.dumps(entry, ensure_ascii=False, sort_keys=True, indent=1))
        with atomic_path(path) as tmp:
            tmp.write_text(text + "\n", encoding="utf-8")

    # ----------------------------------------------------------------- sending

    def complete(
        self, messages: Sequence[Mapping[str, Any]], *, max_tokens: int, **params: Any
    ) -> ChatResult:
        """One chat completion for `messages` (OpenAI message dicts), from the cache when it holds it.

        `params` are further body fields (e.g. `stop`, `response_format`); they are part of the cache
        key. Raises ApiError (after retries) or ConfigError (missing key).
        """
        body = self.request_body(messages, max_tokens=max_tokens, **params)
        key = self.cache_key(body)
        cached = self._cache_get(key)
        if cached is not None:
            with self._lock:
                self.n_cached += 1
            log.debug("cache hit %s", key)
            return chat_result(cached, key, from_cache=True)
        response = self._send_with_retries(body)
        response = json.loads(self._redact(json.dumps(response, ensure_ascii=False)))
        try:
            result = chat_result(response, key, from_cache=False)  # a malformed body is not cached
        except ApiError as exc:
            raise ApiError(f"{self.settings.endpoint}: {exc}") from None
        self._cache_put(key, response)
        return result

    def _send_with_retries(self, body: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        data = canonical_json(body)
        start = self._clock()
        attempt = 0
        while True:
            try:
                response = self._send_once(data)
                missing = missing_text(response)
                if missing:  # retried like a server error, never cached, never judged as an answer
                    raise _Retryable(missing)
                return response
            except _Retryable as exc:
                attempt += 1
                if attempt > s.max_retries:
                    raise ApiError(
                        f"{s.endpoint}: gave up after {attempt} attempt(s): {exc.reason}"
                    ) from None
                delay = min(s.max_backoff_s, s.backoff_s * 2 ** (attempt - 1))
                if exc.retry_after is not None:
                    delay = max(delay, min(exc.retry_after, s.max_backoff_s))
                elapsed = self._clock() - start
                if elapsed + delay > s.max_total_s:
                    raise ApiError(
                        f"{s.endpoint}: gave up after {attempt} attempt(s) in {elapsed:.1f} s "
                        f"(api.max_total_s = {s.max_total_s:g}): {exc.reason}"
                    ) from None
                log.warning(
                    "%s: %s; retry %d/%d in %.2f s", s.endpoint, exc.reason, attempt, s.max_retries, delay
                )
                self._sleep(delay)

    def _send_once(self, data: bytes) -> dict[str, Any]:
        s = self.settings
        request = urllib.request.Request(s.endpoint, data=data, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        key = self._api_key()
        if key is not None:
            request.add_unredirected_header("Authorization", f"Bearer {key}")
        with self._lock:
            self.n_sent += 1
        try:
            with self._opener.open(request, timeout=s.timeout_s) as response:
                raw = response.read(MAX_RESPONSE_BYTES + 1)
        except urllib.error.HTTPError as exc:
            status = exc.code
            detail = self._redact(_error_detail(exc))
            retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            exc.close()
            if status in RETRY_STATUSES or status >= 500:
                raise _Retryable(f"HTTP {status} {detail}".strip(), retry_after) from None
            if 300 <= status < 400:
                raise ApiError(
                    f"{s.endpoint}: HTTP {status} redirect (not followed); set api.base_url to the final URL"
                ) from None
            raise ApiError(f"{s.endpoint}: HTTP {status} {detail}".strip()) from None
        except TimeoutError:
            raise _Retryable(f"no response within api.timeout_s = {s.timeout_s:g} s") from None
        except urllib.error.URLError as exc:
            raise _Retryable(f"cannot connect ({self._redact(str(exc.reason))})") from None
        except (OSError, http.client.HTTPException) as exc:  # reset, remote disconnect, incomplete read
            raise _Retryable(f"connection failed ({type(exc).__name__})") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise ApiError(f"{s.endpoint}: response larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ApiError(f"{s.endpoint}: response is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(f"{s.endpoint}: response is not a JSON object")
        return body


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI's `{"error": {"message": ...}}`) or the body, one line, short."""
    try:
        raw = exc.read(65536).decode("utf-8", "replace")
    except OSError:
        return ""
    message = raw
    try:
        parsed = json.loads(raw)
        err = parsed.get("error") if isinstance(parsed, dict) else None
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
        elif isinstance(err, str):
            message = err
    except json.JSONDecodeError:
        pass
    message = " ".join(message.split())
    return message[:300] + ("..." if len(message) > 300 else "")


def _retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds (HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
