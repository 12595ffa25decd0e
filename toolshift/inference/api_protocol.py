"""The OpenAI-compatible chat endpoint's side of the API client: the settings that say where and how to call
it (`ApiSettings`, a model entry's `api:` block), what one completion is (`ChatResult`), and how a
chat-completions response is read (`parse_response`, `missing_text`). Sending, retries, the key and the
cache are `toolshift.inference.api_client.ChatClient`'s.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from toolshift.errors import ConfigError, ToolshiftError

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ApiError(ToolshiftError):
    """An API request failed for good: a non-retryable status, or retries exhausted."""


@dataclass(frozen=True)
class ApiSettings:
    """Where and how to call an OpenAI-compatible chat endpoint (a model entry's `api:` block).

    `base_url` is the API root that `/chat/completions` is appended to (e.g.
    `https://api.openai.com/v1`, `http://127.0.0.1:8000/v1`). `max_tokens_param` is the body field
    that carries the token budget (`max_completion_tokens` for OpenAI reasoning models).
    """

    base_url: str
    model: str
    api_key_env: str | None = DEFAULT_KEY_ENV
    cache_dir: Path | None = None
    timeout_s: float = 60.0
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    max_total_s: float = 600.0
    temperature: float | None = 0.0
    seed: int | None = None
    max_tokens_param: str = "max_tokens"
    concurrency: int = 4
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = "api"
        parsed = urllib.parse.urlsplit(self.base_url if isinstance(self.base_url, str) else "")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"{where}.base_url: expected an http(s) URL such as https://api.openai.com/v1")
        if parsed.username or parsed.password or parsed.query:
            raise ConfigError(f"{where}.base_url: must hold no user, password or query string")
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"{where}.model: expected the endpoint's model name, got {self.model!r}")
        if self.api_key_env is not None:
            if not isinstance(self.api_key_env, str) or not _ENV_NAME.match(self.api_key_env):
                # The value may be a key pasted by mistake: never echo it.
                raise ConfigError(
                    f"{where}.api_key_env: must be the NAME of an environment variable (letters, digits, _), "
                    "e.g. OPENAI_API_KEY, not the key itself"
                )
        positive = ("timeout_s", "backoff_s", "max_backoff_s", "max_total_s")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{where}.{name}: expected a positive number, got {value!r}")
        for name, low in (("max_retries", 0), ("concurrency", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{where}.{name}: expected an integer >= {low}, got {value!r}")
        t = self.temperature
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not 0 <= t <= 2):
            raise ConfigError(f"{where}.temperature: expected a number in [0, 2] or null, got {t!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ConfigError(f"{where}.seed: expected an integer or null, got {self.seed!r}")
        if self.max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError(
                f"{where}.max_tokens_param: expected max_tokens or max_completion_tokens, "
                f"got {self.max_tokens_param!r}"
            )
        if not isinstance(self.extra_body, dict):
            raise ConfigError(f"{where}.extra_body: expected a mapping, got {self.extra_body!r}")
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    @property
    def endpoint(self) -> str:
        """The full chat-completions URL."""
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def do_sample(self) -> bool:
        """Whether the server samples: anything but an explicit temperature 0."""
        return self.temperature is None or float(self.temperature) != 0.0

    @classmethod
    def from_mapping(
        cls, api: Mapping[str, Any], *, where: str = "api", cache_dir: str | os.PathLike[str] | None = None
    ) -> ApiSettings:
        """Settings from a config mapping; `cache_dir` is the default when the mapping names none.

        An unknown key raises ConfigError listing the allowed ones; a key named like `api_key` gets a
        message saying to set an environment variable instead (its value is never shown).
        """
        if not isinstance(api, Mapping):
            raise ConfigError(f"{where}: expected a mapping with base_url and model")
        allowed = [f.name for f in fields(cls)]
        for key in api:
            if key in ("api_key", "key", "token", "secret"):
                raise ConfigError(
                    f"{where}.{key}: never put an API key in a config; export it in an environment "
                    f"variable and name that variable in {where}.api_key_env"
                )
            if key not in allowed:
                raise ConfigError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        missing = [k for k in ("base_url", "model") if k not in api]
        if missing:
            raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")
        values = dict(api)
        if values.get("cache_dir") is None and cache_dir is not None:
            values["cache_dir"] = cache_dir
        if values.get("extra_body") is None:
            values.pop("extra_body", None)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("api.", f"{where}.", 1)) from None


@dataclass(frozen=True)
class ChatResult:
    """One chat completion: the assistant text and what the server reported about it."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cache_key: str
    from_cache: bool
    body: dict[str, Any]
    """The server's JSON response (with any echoed key redacted)."""


def parse_response(body: Mapping[str, Any]) -> tuple[str, str | None, int | None, int | None]:
    """(text, finish_reason, prompt_tokens, completion_tokens) of a chat-completion response."""
    choices = body.get("choices") if isinstance(body, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise ApiError("response has no choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping):
        raise ApiError("response choice has no message")
    content = message.get("content")
    if isinstance(content, list):  # some servers return content parts
        content = "".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    if content is None:
        missing = missing_text(body)
        if missing:
            raise ApiError(missing)
        content = message.get("refusal") or ""  # OpenAI puts a declined answer here
    if not isinstance(content, str):
        raise ApiError(f"response message content has type {type(content).__name__}, expected a string")
    usage = body.get("usage") if isinstance(body.get("usage"), Mapping) else {}

    def count(name: str) -> int | None:
        value = usage.get(name)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None

    finish = choice.get("finish_reason")
    return (
        content,
        finish if isinstance(finish, str) else None,
        count("prompt_tokens"),
        count("completion_tokens"),
    )


def missing_text(body: Mapping[str, Any]) -> str | None:
    """Why a reply carries no answer at all, or None: `message.content` null (or absent) with no
    `refusal` text, unless the provider's content filter stopped it (`finish_reason: content_filter`,
    an answer of its own, kept and counted by the API backend). Such a reply is a failed request: an
    empty string stored for it would be cached and judged safe."""
    choices = body.get("choices") if isinstance(body, Mapping) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        return None
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, Mapping) or message.get("content") is not None or message.get("refusal"):
        return None
    finish = choice.get("finish_reason")
    if finish == "content_filter":
        return None
    return (
        f"the reply has no text (message content null, finish_reason {finish!r}); see the server's log "
        "(a reasoning model may spend the whole token budget before answering: raise max_new_tokens)"
    )


def chat_result(body: dict[str, Any], key: str, *, from_cache: bool) -> ChatResult:
    text, finish, n_prompt, n_completion = parse_response(body)
    return ChatResult(text, finish, n_prompt, n_completion, key, from_cache, body)
