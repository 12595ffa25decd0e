"""The OpenAI-compatible chat client against a fake server on loopback: request shape, retries with
backoff (fake clock: no real waiting), the content-hash cache, and that the key never leaks."""

from __future__ import annotations

import json
import logging
import secrets
import socket

import pytest
from fake_openai_server import DEFAULT_REPLY, FakeOpenAIServer

from toolshift.errors import ConfigError
from toolshift.inference.api_client import REDACTED, ApiError, ApiSettings, ChatClient
from toolshift.inference.api_protocol import parse_response

KEY_ENV = "TOOLSHIFT_TEST_KEY"
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]


def fresh_key() -> str:
    return "sk-test-" + secrets.token_hex(16)


class FakeClock:
    """A clock that only moves when the client sleeps; records the delays."""

    def __init__(self) -> None:
        self.now = 0.0
        self.delays: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def make_client(server, tmp_path=None, *, key=None, clock=None, **settings) -> ChatClient:
    settings.setdefault("api_key_env", KEY_ENV)
    s = ApiSettings(
        base_url=server.base_url if hasattr(server, "base_url") else server,
        model="fake-model",
        cache_dir=None if tmp_path is None else tmp_path / "cache",
        **settings,
    )
    clock = clock or FakeClock()
    environ = {} if key is None else {KEY_ENV: key}
    return ChatClient(s, environ=environ, sleep=clock.sleep, clock=clock)


def test_request_is_deterministic_and_authorised(tmp_path):
    key = fresh_key()
    with FakeOpenAIServer() as server:
        result = make_client(server, key=key).complete(MESSAGES, max_tokens=17)
    assert result.text == DEFAULT_REPLY and result.finish_reason == "stop" and not result.from_cache
    assert result.completion_tokens == len(DEFAULT_REPLY.split()) and result.prompt_tokens > 0
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == f"Bearer {key}"
    body = request["body"]
    assert body == {
        "model": "fake-model",
        "messages": MESSAGES,
        "n": 1,
        "stream": False,
        "max_tokens": 17,
        "temperature": 0.0,
    }


def test_settings_shape_the_body(tmp_path):
    with FakeOpenAIServer() as server:
        client = make_client(
            server,
            key=fresh_key(),
            temperature=None,
            seed=3,
            max_tokens_param="max_completion_tokens",
            extra_body={"top_p": 1},
        )
        client.complete(MESSAGES, max_tokens=5, stop=["\n"])
    body = server.requests[0]["body"]
    assert "temperature" not in body and "max_tokens" not in body
    assert body["max_completion_tokens"] == 5 and body["seed"] == 3
    assert body["top_p"] == 1 and body["stop"] == ["\n"]
    assert client.settings.do_sample


def test_cache_hit_sends_nothing_and_needs_no_key(tmp_path):
    with FakeOpenAIServer() as server:
        first = make_client(server, tmp_path, key=fresh_key()).complete(MESSAGES, max_tokens=8)
        again = make_client(server, tmp_path, key=None)  # a rerun on another machine, no key exported
        second = again.complete(MESSAGES, max_tokens=8)
        assert server.n_requests == 1
        other = make_client(server, tmp_path, key=fresh_key()).complete(MESSAGES, max_tokens=9)
        assert server.n_requests == 2  # a different request is a different cache entry
    assert second.from_cache and second.text == first.text and second.cache_key == first.cache_key
    assert (again.n_sent, again.n_cached) == (0, 1)
    assert other.cache_key != first.cache_key
    files = sorted((tmp_path / "cache").rglob("*.json"))
    assert [f.stem for f in files] == sorted([first.cache_key, other.cache_key])
    assert files[0].parent.name == files[0].stem[:2]


def test_cache_key_ignores_the_key_and_follows_the_endpoint(tmp_path):
    with FakeOpenAIServer() as a, FakeOpenAIServer() as b:
        body = make_client(a, key=fresh_key()).request_body(MESSAGES, max_tokens=8)
        k1 = make_client(a, key=fresh_key()).cache_key(body)
        k2 = make_client(a, key=fresh_key()).cache_key(body)
        k3 = make_client(b, key=fresh_key()).cache_key(body)
    assert k1 == k2 and k1 != k3 and len(k1) == 64


def test_unreadable_cache_entry_is_asked_again(tmp_path):
    with FakeOpenAIServer() as server:
        result = make_client(server, tmp_path, key=fresh_key()).complete(MESSAGES, max_tokens=8)
        path = tmp_path / "cache" / result.cache_key[:2] / f"{result.cache_key}.json"
        path.write_text('{"response": ', encoding="utf-8")
        again = make_client(server, tmp_path, key=fresh_key()).complete(MESSAGES, max_tokens=8)
        assert server.n_requests == 2
    assert not again.from_cache and json.loads(path.read_text())["response"]["choices"]


def test_retries_with_exponential_backoff():
    clock = FakeClock()
    with FakeOpenAIServer(failures=[429, 500, 503]) as server:
        result = make_client(server, key=fresh_key(), clock=clock, backoff_s=0.5, max_backoff_s=30).complete(
            MESSAGES, max_tokens=4
        )
    assert result.text == DEFAULT_REPLY
    assert server.n_requests == 4
    assert clock.delays == [0.5, 1.0, 2.0]


def test_backoff_is_capped_and_retry_after_honoured():
    clock = FakeClock()
    with FakeOpenAIServer(failures=[500, 500, 500], retry_after=3) as server:
        make_client(server, key=fresh_key(), clock=clock, backoff_s=1, max_backoff_s=2.5).complete(
            MESSAGES, max_tokens=4
        )
    # Retry-After 3 s is capped at max_backoff_s 2.5; the exponential 1, 2, 4 too.
    assert clock.delays == [2.5, 2.5, 2.5]


def test_gives_up_after_max_retries():
    clock = FakeClock()
    with FakeOpenAIServer(failures=[502] * 10) as server:
        client = make_client(server, key=fresh_key(), clock=clock, max_retries=2)
        with pytest.raises(ApiError, match=r"gave up after 3 attempt\(s\): HTTP 502 scripted failure 502"):
            client.complete(MESSAGES, max_tokens=4)
    assert server.n_requests == 3 and clock.delays == [1.0, 2.0]


def test_total_time_is_bounded():
    clock = FakeClock()
    with FakeOpenAIServer(failures=[429] * 10) as server:
        client = make_client(
            server, key=fresh_key(), clock=clock, backoff_s=10, max_total_s=25, max_retries=9
        )
        with pytest.raises(ApiError, match=r"max_total_s = 25"):
            client.complete(MESSAGES, max_tokens=4)
    assert clock.delays == [10]  # the next wait (20 s) would pass 25 s in all
    assert server.n_requests == 2


def test_timeout_is_retried_then_reported():
    clock = FakeClock()
    with FakeOpenAIServer(delay_s=0.5) as server:
        client = make_client(server, key=fresh_key(), clock=clock, timeout_s=0.05, max_retries=1)
        with pytest.raises(ApiError, match=r"gave up after 2 attempt\(s\): no response within"):
            client.complete(MESSAGES, max_tokens=4)
        assert server.n_requests == 2


def test_connection_refused_is_retried():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    clock = FakeClock()
    client = make_client(f"http://127.0.0.1:{port}/v1", key=fresh_key(), clock=clock, max_retries=2)
    with pytest.raises(ApiError, match="cannot connect"):
        client.complete(MESSAGES, max_tokens=4)
    assert clock.delays == [1.0, 2.0] and client.n_sent == 3


def test_client_error_fails_at_once_and_redacts_the_echoed_key(tmp_path, caplog):
    key = fresh_key()
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(require_key="sk-the-right-one-0000", failures=[]) as server:
        client = make_client(server, tmp_path, key=key)
        with pytest.raises(ApiError) as info:
            client.complete(MESSAGES, max_tokens=4)
    message = str(info.value)
    assert server.n_requests == 1 and "HTTP 401" in message
    assert key not in message and REDACTED in message  # the server echoed the key; we did not
    assert key not in caplog.text
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").rglob("*.json"))


def test_key_never_reaches_cache_logs_or_results(tmp_path, caplog):
    key = fresh_key()
    caplog.set_level(logging.DEBUG)
    echo = f"echo {key} end"  # a server that repeats the key in its answer
    with FakeOpenAIServer(reply=echo, failures=[429]) as server:
        result = make_client(server, tmp_path, key=key).complete(MESSAGES, max_tokens=4)
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {key}"  # it was sent
    assert key not in result.text and result.text == f"echo {REDACTED} end"
    assert key not in json.dumps(result.body)
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path
    assert key not in caplog.text


def test_missing_key_names_the_variable_and_sends_nothing():
    with FakeOpenAIServer() as server:
        client = make_client(server, key=None)
        with pytest.raises(ConfigError, match=f"environment variable {KEY_ENV} is not set"):
            client.complete(MESSAGES, max_tokens=4)
        assert server.n_requests == 0


def test_no_key_variable_sends_no_authorization():
    with FakeOpenAIServer() as server:
        make_client(server, key=None, api_key_env=None).complete(MESSAGES, max_tokens=4)
    assert "authorization" not in server.requests[0]["headers"]


def test_settings_reject_keys_in_config_without_echoing_them():
    key = fresh_key()
    with pytest.raises(ConfigError, match="never put an API key") as info:
        ApiSettings.from_mapping({"base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key": key})
    assert key not in str(info.value)
    with pytest.raises(ConfigError, match="NAME of an environment variable") as info:
        ApiSettings.from_mapping({"base_url": "http://127.0.0.1:1/v1", "model": "m", "api_key_env": key})
    assert key not in str(info.value)


@pytest.mark.parametrize(
    ("api", "message"),
    [
        ({"model": "m"}, "models.x.api: missing key(s) base_url"),
        ({"base_url": "ftp://host/v1", "model": "m"}, "models.x.api.base_url: expected an http"),
        ({"base_url": "http://h/v1", "model": "m", "retries": 3}, "unknown key 'retries'"),
        ({"base_url": "http://h/v1", "model": "m", "timeout_s": 0}, "models.x.api.timeout_s"),
        ({"base_url": "http://h/v1", "model": "m", "temperature": 3}, "models.x.api.temperature"),
        ({"base_url": "http://h/v1", "model": "m", "max_tokens_param": "n"}, "max_tokens_param"),
    ],
)
def test_settings_errors_name_the_key(api, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ApiSettings.from_mapping(api, where="models.x.api")


def test_from_mapping_uses_the_default_cache_dir(tmp_path):
    s = ApiSettings.from_mapping({"base_url": "http://h/v1", "model": "m"}, cache_dir=tmp_path)
    assert s.cache_dir == tmp_path and s.endpoint == "http://h/v1/chat/completions"
    own = ApiSettings.from_mapping(
        {"base_url": "http://h/v1/", "model": "m", "cache_dir": "c"}, cache_dir=tmp_path
    )
    assert str(own.cache_dir) == "c" and own.endpoint == "http://h/v1/chat/completions"


def test_parse_reads_the_variants_servers_send():
    def body(message, **extra):
        return {"choices": [{"message": message, "finish_reason": "stop"}], **extra}

    assert parse_response(body({"content": "a"}))[0] == "a"
    parts = {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    assert parse_response(body(parts))[0] == "ab"
    assert parse_response(body({"content": None, "refusal": "no"}))[0] == "no"
    usage = {"prompt_tokens": 5, "completion_tokens": 2}
    assert parse_response(body({"content": "x"}, usage=usage))[2:] == (5, 2)
    assert parse_response(body({"content": "x"}))[2:] == (None, None)
    with pytest.raises(ApiError, match="no choices"):
        parse_response({"choices": []})
    with pytest.raises(ApiError, match="content has type int"):
        parse_response(body({"content": 3}))
