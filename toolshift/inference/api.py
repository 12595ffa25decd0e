"""Inference through an OpenAI-compatible chat endpoint: behaviour only, no activations.

This backend writes the same `responses.parquet` as the Hugging Face path (the responses contract)
and no `activations.nc`: a remote model exposes no residual stream, so the vector and intervention
stages skip API models.

Rendering. An episode is first rendered by a family adapter exactly as for a local model (default:
the generic Hermes / Qwen convention of `toolshift.models.adapters.FamilyAdapter`): the tool spec is appended
to the system prompt, an assistant tool call becomes `<tool_call>{json}</tool_call>` text, and a tool
turn becomes a *user* turn `<tool_response>` image `</tool_response>`. OpenAI's own `tool` role is not
used because tool messages cannot carry images there; the text rendering keeps every condition
(including the image-returning tool turns) expressible and identical in wording to the local path.
Images become base64 PNG data URLs in `image_url` content parts; messages whose parts are all text
are sent as a plain string (what every OpenAI-compatible server accepts for system and assistant turns).

Token counts come from the response's `usage` (`prompt_tokens`, `completion_tokens`); a server that
reports no usage gives -1 in `n_prompt_tokens` / `n_new_tokens`. Of TOKEN_COLUMNS only `n_images` is known
(the others are -1: no processor). `text_trail_long` cannot be rendered (it is padded to the tokens of an
image on the model's processor): its episodes stop the job with a ContractError; `image_turn`'s assistant
line keeps the episode's stand-in (as many characters as the default rendering of the call).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from toolshift.contracts import TOKEN_COLUMNS, read_episodes, read_prompts, write_parquet
from toolshift.errors import ConfigError, ContractError
from toolshift.inference.api_client import ApiError, ApiSettings, ChatClient, ChatResult
from toolshift.models.adapters import FamilyAdapter, get_adapter
from toolshift.models.generation import GENERATION_COLUMNS
from toolshift.models.generation import shard as shard_of

log = logging.getLogger(__name__)

UNKNOWN_TOKENS = -1
"""`n_prompt_tokens` / `n_new_tokens` when the server reports no usage."""


def image_data_url(image: Any) -> str:
    """A PIL image as a `data:image/png;base64,...` URL (RGB, deterministic PNG encoding)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", optimize=False)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def render_openai_messages(
    episode: dict[str, Any], results_root: str | os.PathLike[str], adapter: FamilyAdapter | None = None
) -> list[dict[str, Any]]:
    """An episode as OpenAI chat messages (see the module docstring for the rendering)."""
    adapter = adapter or FamilyAdapter()
    messages, images = adapter.render_messages(episode, results_root)
    if messages and messages[-1]["role"] == "assistant":
        raise ConfigError(
            f"episode {episode.get('prompt_id')!r}: family {adapter.family} continues the assistant turn "
            "after a tool result (Thyme's <sandbox_output>), which a chat-completions request cannot express"
        )
    urls = iter([image_data_url(im) for im in images])
    out: list[dict[str, Any]] = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": next(urls)}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        if all(p["type"] == "text" for p in parts):
            out.append({"role": message["role"], "content": "".join(p["text"] for p in parts)})
        else:
            out.append({"role": message["role"], "content": parts})
    if next(urls, None) is not None:
        raise ContractError(f"episode {episode.get('prompt_id')!r}: more images than image parts")
    return out


def _row(
    episode: dict[str, Any],
    messages: list[dict[str, Any]],
    result: ChatResult,
    max_new_tokens: int,
    do_sample: bool,
) -> dict[str, Any]:
    def tokens(n: int | None) -> int:
        return UNKNOWN_TOKENS if n is None else int(n)

    n_images = sum(
        part.get("type") == "image_url"
        for m in messages
        if isinstance(m["content"], list)
        for part in m["content"]
    )
    return {
        "prompt_id": episode["prompt_id"],
        "condition": episode["condition"],
        "response": result.text,
        "n_prompt_tokens": tokens(result.prompt_tokens),
        "n_new_tokens": tokens(result.completion_tokens),
        "max_new_tokens": int(max_new_tokens),
        "do_sample": bool(do_sample),
        **dict.fromkeys(TOKEN_COLUMNS, UNKNOWN_TOKENS),
        "n_images": int(n_images),
    }


def generate_api(
    client: ChatClient,
    episodes: list[dict[str, Any]],
    results_root: str | os.PathLike[str],
    *,
    max_new_tokens: int,
    progress: bool = True,
    adapter: FamilyAdapter | None = None,
    workers: int | None = None,
) -> pd.DataFrame:
    """One chat completion per episode, in episode order: a table with GENERATION_COLUMNS.

    `workers` requests run at once (default: the client's `concurrency`); each finished response is
    cached by the client, so a crash loses nothing and a rerun sends only what is missing. `do_sample`
    is False exactly when the request asks for temperature 0.
    """
    from tqdm.auto import tqdm

    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens: expected an integer >= 1, got {max_new_tokens!r}")
    workers = client.settings.concurrency if workers is None else workers
    if workers < 1:
        raise ConfigError(f"workers: expected an integer >= 1, got {workers!r}")
    requests = [render_openai_messages(ep, results_root, adapter) for ep in episodes]
    stop = {"stop": list(adapter.stop_strings)} if adapter is not None and adapter.stop_strings else {}
    do_sample = client.settings.do_sample
    bar = tqdm(total=len(episodes), desc="api", unit="episode", file=sys.stderr, disable=not progress)

    def one(prompt_id: str, messages: list[dict[str, Any]]) -> ChatResult:
        try:
            result = client.complete(messages, max_tokens=max_new_tokens, **stop)
        except ApiError as exc:
            raise ApiError(f"prompt {prompt_id}: {exc}") from None
        bar.update(1)
        return result

    ids = [str(ep["prompt_id"]) for ep in episodes]

    with bar:
        if workers == 1 or len(requests) <= 1:
            results = [one(i, m) for i, m in zip(ids, requests, strict=True)]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(one, ids, requests))
    filtered = [
        ep["prompt_id"]
        for ep, r in zip(episodes, results, strict=True)
        if r.finish_reason == "content_filter"
    ]
    if filtered:
        log.warning(
            "%d response(s) stopped by the provider's content filter (empty or cut text), e.g. %s",
            len(filtered),
            filtered[0],
        )
    rows = [
        _row(ep, m, r, max_new_tokens, do_sample)
        for ep, m, r in zip(episodes, requests, results, strict=True)
    ]
    df = pd.DataFrame(rows, columns=list(GENERATION_COLUMNS))
    integers = ("n_prompt_tokens", "n_new_tokens", "max_new_tokens", *TOKEN_COLUMNS)
    return df.astype(dict.fromkeys(integers, "int64"))


def client_for_entry(
    entry: dict[str, Any], *, model_name: str, cache_dir: str | os.PathLike[str] | None = None
) -> ChatClient:
    """A ChatClient from a model entry's `api:` block (`cache_dir` is used when the block names none)."""
    if "api" not in entry:
        raise ConfigError(f"models.{model_name}: backend openai needs an api block (base_url, model)")
    settings = ApiSettings.from_mapping(entry["api"], where=f"models.{model_name}.api", cache_dir=cache_dir)
    return ChatClient(settings)


def run_api_inference(
    *,
    model_name: str,
    entry: dict[str, Any],
    episodes_path: Path,
    prompts_path: Path,
    results_root: Path,
    max_new_tokens: int,
    responses_out: Path,
    cache_dir: Path | None = None,
    shard: int = 0,
    n_shards: int = 1,
    progress: bool = True,
) -> None:
    """Generate one (API model, dataset, condition) run, or one shard of it, and write responses.parquet."""
    from toolshift.analysis.interventions import NO_INTERVENTION
    from toolshift.inference.runner import attach_prompt_fields

    prompts = read_prompts(prompts_path)
    episodes = shard_of(read_episodes(episodes_path), n_shards, shard)
    client = client_for_entry(entry, model_name=model_name, cache_dir=cache_dir)
    adapter = get_adapter(entry["family"]) if entry.get("family") else None
    log.info("%s: %d episodes via %r", model_name, len(episodes), client)
    table = generate_api(
        client, episodes, results_root, max_new_tokens=max_new_tokens, progress=progress, adapter=adapter
    )
    log.info("%s: %d request(s) sent, %d answered from the cache", model_name, client.n_sent, client.n_cached)
    write_parquet(
        attach_prompt_fields(table, prompts, model_name, NO_INTERVENTION, "api", episodes), responses_out
    )
