"""The `vllm` engine: the same runs as the HF reference through a vLLM engine, with continuous batching.

Runs in the vLLM environment (`make vllm-env`; toolshift.models.engines.environment finds it). Prompts are
rendered exactly as on the HF path (the family adapter, the HF processor's chat template with the
generation prompt, the duplicate-BOS rule) and handed to vLLM as text plus images; vLLM's own processor
expands the image placeholders. All episodes of all requests of one `generate` call go through one vLLM
engine loop (continuous batching); they are fed as the batch drains (at most WINDOW_FACTOR x
`max_num_seqs` in flight), so that the processed images of a large shard are not all held in memory at
once. Each episode carries its own capture and intervention in `SamplingParams.extra_args`:

- capture: toolshift.models.engines.vllm_worker keeps the residual stream (`hidden + residual`) at the last
prompt
  token after every decoder layer, and only that row;
- `add`: a vllm-lens `SteeringVector` (alpha * v at layer `layer`, every position, prompt and generated);
- `ablate`: vllm-lens hooks on every decoder layer projecting the unit direction out of the layer's input
  (pre-hook) and output (post-hook). A post-hook writes the whole stream into the layer's hidden output
  and zeroes its residual, so the next layer's input (also after Qwen3-VL's deepstack addition) is the
  full stream as in HF.

Greedy decoding as the HF engine does it: the model's generation config for eos, pad and
repetition_penalty, stop at the first eos or pad, the response decoded with the HF tokenizer
(skip_special_tokens). tests/test_vllm_engine.py checks tokens, states and interventions against HFEngine.

What the engine is started with (the families it serves, the `vllm.LLM` arguments, the device and
checkpoint checks) is in toolshift.models.engines.vllm_launch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolshift.contracts import TOKEN_COLUMNS
from toolshift.errors import ConfigError, ContractError
from toolshift.models.adapters import get_adapter
from toolshift.models.engines import vllm_worker
from toolshift.models.engines.base import Engine, RunRequest, RunResult
from toolshift.models.engines.vllm_launch import (
    UNSERVED,
    VLLM_FAMILIES,
    check_cpu_head_size,
    llm_arguments,
    select_device,
    served_model_dir,
    vllm_platform,
)
from toolshift.models.generation import GENERATION_COLUMNS, stop_string_cut
from toolshift.models.hooks import ResidualEdit
from toolshift.models.loading import DTYPES, _fixture_revision, check_safetensors_only
from toolshift.models.token_counts import token_counter

log = logging.getLogger(__name__)

__all__ = ["UNSERVED", "VLLM_FAMILIES", "VLLMEngine"]

WINDOW_FACTOR = 2
"""Episodes in flight: this many times `max_num_seqs`, enough to keep the batch full as requests end."""


class VLLMEngine(Engine):
    """A vLLM engine (vllm.LLM) with vllm-lens hooks; see the module docstring."""

    name = "vllm"

    def __init__(
        self,
        llm: Any,
        processor: Any,
        family: str,
        *,
        model_id: str,
        revision: str,
        n_layers: int,
        hidden_size: int,
        generation_config: Any,
        images_per_prompt: int,
        max_num_seqs: int,
        workdir: Path | None = None,
    ) -> None:
        self.llm = llm
        self.processor = processor
        self.family = family
        self.adapter = get_adapter(family)
        self.model_id = model_id
        self.revision = revision
        self.n_layers = n_layers
        self.hidden_size = hidden_size
        self.images_per_prompt = images_per_prompt
        self.window = max(1, WINDOW_FACTOR * max_num_seqs)
        self.min_new_tokens = 0
        """Suppress eos and pad until this many new tokens (throughput measurements; 0 in the study)."""
        self._workdir = workdir
        self._stop_ids, self._repetition_penalty = _stop_settings(generation_config, processor)

    # ----------------------------------------------------------------- open / close

    @classmethod
    def open(
        cls,
        model_dir: str | os.PathLike[str],
        entry: Mapping[str, Any],
        generation: Mapping[str, Any],
        *,
        device: str = "auto",
    ) -> VLLMEngine:
        """Start a vLLM engine on `entry`'s model in `model_dir` (this process must have vLLM).

        `generation["vllm"]` (a mapping) passes extra keyword arguments to `vllm.LLM`, e.g.
        tensor_parallel_size, gpu_memory_utilization, max_model_len, max_num_seqs, limit_mm_per_prompt.
        """
        family = entry["family"]
        if family not in VLLM_FAMILIES:
            why = UNSERVED.get(family, "it is not among the families checked against HF")
            raise ConfigError(
                f"engine vllm does not serve family {family!r} ({why}); use generation.engine: hf for it, "
                f"vllm serves {', '.join(VLLM_FAMILIES)}"
            )
        dtype = entry.get("dtype", "float32")
        if dtype not in DTYPES:
            raise ConfigError(f"model dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        trust_remote_code = entry.get("trust_remote_code", False)
        if not isinstance(trust_remote_code, bool):
            raise ConfigError(f"trust_remote_code must be true or false, got {trust_remote_code!r}")
        extra = generation.get("vllm") or {}
        if not isinstance(extra, Mapping):
            raise ConfigError(f"generation.vllm must be a mapping of vllm.LLM arguments, got {extra!r}")
        source = str(model_dir)
        if not Path(source).is_dir():
            raise ConfigError(f"engine vllm: model directory {source!r} does not exist")
        check_safetensors_only(source)
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ConfigError(
                f"engine vllm: vllm cannot be imported in {sys.executable} ({exc}): run it with the vLLM "
                "environment's python (`make vllm-env`, toolshift.models.engines.environment.vllm_python)"
            ) from None
        select_device(device, vllm_platform(), extra)

        from transformers import AutoConfig, AutoProcessor, GenerationConfig

        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        adapter = get_adapter(family)
        if adapter.model_types and config.model_type not in adapter.model_types:
            raise ConfigError(
                f"model {source!r} has model_type {config.model_type!r}, but family {family!r} expects "
                f"{' or '.join(adapter.model_types)}"
            )
        text_config = config.get_text_config()
        if vllm_platform() == "cpu":
            check_cpu_head_size(text_config, source)
        workdir, served = served_model_dir(Path(source), family)
        kwargs = llm_arguments(served, dtype, trust_remote_code, extra, vllm_platform())
        try:
            llm = LLM(**kwargs)
        except Exception as exc:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)
            lines = str(exc).strip().splitlines()
            msg = f"{type(exc).__name__}: {lines[-1][:300]}" if lines else type(exc).__name__
            raise ConfigError(f"engine vllm: model {source!r} cannot be started: {msg}") from exc
        layers = sorted({i for found in llm.collective_rpc("toolshift_install") for i in found})
        n_layers = int(text_config.num_hidden_layers)
        if layers != list(range(n_layers)):
            raise ContractError(
                f"engine vllm: found decoder layers {layers} in {source!r}, expected 0..{n_layers - 1}"
            )
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
        try:
            generation_config = GenerationConfig.from_pretrained(source)
        except OSError:
            generation_config = GenerationConfig.from_model_config(config)
        images = kwargs["limit_mm_per_prompt"]
        return cls(
            llm,
            processor,
            family,
            model_id=source,
            revision=entry.get("revision") or _fixture_revision(source) or "unpinned",
            n_layers=n_layers,
            hidden_size=int(text_config.hidden_size),
            generation_config=generation_config,
            images_per_prompt=int(images.get("image", 1) if isinstance(images, Mapping) else images),
            max_num_seqs=int(llm.llm_engine.vllm_config.scheduler_config.max_num_seqs),
            workdir=workdir,
        )

    def close(self) -> None:
        """Shut the vLLM engine down and remove any converted model copy."""
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception as exc:  # noqa: BLE001 - shutting down is best effort
                log.debug("vllm engine shutdown: %s", exc)
            del llm
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    # ----------------------------------------------------------------- interventions

    def supports(self, intervention: ResidualEdit | None) -> bool:
        """`add` and `ablate` are exact on every family this engine serves (see the module docstring)."""
        return intervention is None or intervention.kind in ("add", "ablate")

    def _register(self, intervention: ResidualEdit | None, key: str) -> dict[str, Any]:
        """Send `intervention` to the workers under `key`; the extra_args that select it."""
        if intervention is None:
            return {}
        import cloudpickle
        import torch
        from vllm_lens import Hook, SteeringVector

        vector = np.asarray(intervention.vector, dtype=np.float32)
        if vector.shape != (self.hidden_size,):
            what = "add_vector vector" if intervention.kind == "add" else "ablation direction"
            raise ConfigError(f"{what} must have shape ({self.hidden_size},), got {vector.shape}")
        if intervention.kind == "add":
            layer = _check_layer(intervention.layer, self.n_layers)
            steering = vector * np.float32(intervention.alpha)
            payload = [SteeringVector(activations=torch.from_numpy(steering[None, :]), layer_indices=[layer])]
            self.llm.collective_rpc("set_steering_data", args=(key, _pickle(payload)))
            return {"_steering_id": key}
        if not float(np.linalg.norm(vector)) > 0:
            raise ConfigError("ablation direction has zero norm")
        project = vllm_worker.ProjectOut(vector)
        layers = list(range(self.n_layers))
        hooks = [Hook(fn=project, layer_indices=layers, pre=True), Hook(fn=project, layer_indices=layers)]
        self.llm.collective_rpc("set_hook_data", args=(key, cloudpickle.dumps(hooks)))
        return {"_hook_id": key}

    # ----------------------------------------------------------------- generation

    def _prompt(self, episode: Mapping[str, Any], results_root: str | os.PathLike[str]) -> dict[str, Any]:
        """The vLLM prompt of an episode: the HF path's rendered text and the episode's images (and, under
        `_rendered`, what the token counts need)."""
        rendered = self.adapter.render(dict(episode), results_root, self.processor)
        messages, images = rendered.messages, rendered.images
        if len(images) > self.images_per_prompt:
            raise ConfigError(
                f"episode {episode.get('prompt_id')}/{episode.get('condition')} has {len(images)} images, "
                f"more than the vllm engine's limit of {self.images_per_prompt}: raise "
                "generation.vllm.limit_mm_per_prompt.image"
            )
        text = self.adapter.chat_prompt(self.processor, messages)
        arguments = self.adapter.processor_inputs(self.processor, [text], images)
        prompt: dict[str, Any] = {"prompt": arguments["text"][0], "_rendered": rendered}
        if images:
            prompt["multi_modal_data"] = {"image": list(images)}
        return prompt

    def _params(self, max_new_tokens: int, extra: dict[str, Any]) -> Any:
        from vllm import SamplingParams

        return SamplingParams(
            temperature=0.0,
            max_tokens=max_new_tokens,
            min_tokens=min(self.min_new_tokens, max_new_tokens),
            ignore_eos=True,  # stop on exactly the HF engine's stop ids, not on vLLM's own eos list
            stop_token_ids=sorted(self._stop_ids),
            repetition_penalty=self._repetition_penalty,
            detokenize=False,
            extra_args=extra or None,
        )

    def generate(
        self,
        requests: Sequence[RunRequest],
        results_root: str | os.PathLike[str],
        *,
        max_new_tokens: int,
        progress: bool = False,
    ) -> list[RunResult]:
        if self.llm is None:
            raise ConfigError("engine vllm: generate called after close")
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens ({max_new_tokens}) must be >= 1")
        for request in requests:
            if not self.supports(request.intervention):
                kind = request.intervention.kind if request.intervention else None
                raise ConfigError(
                    f"engine vllm: run {request.name!r}: intervention {kind!r} is not supported"
                )
        call = uuid.uuid4().hex[:12]
        steering_keys: list[str] = []
        hook_keys: list[str] = []
        jobs: list[tuple[int, int, str, dict[str, Any]]] = []  # (request, episode, request id, extra_args)
        try:
            for r, request in enumerate(requests):
                # vllm-lens also applies the data stored under a key to every request whose id starts with
                # "<key>-": keys and request ids must not share that prefix
                key = f"toolshift-intervention-{call}-{r}"
                extra = self._register(request.intervention, key)
                if "_steering_id" in extra:
                    steering_keys.append(key)
                if "_hook_id" in extra:
                    hook_keys.append(key)
                for i in range(len(request.episodes)):
                    request_id = f"toolshift-{call}-{r}-{i}"
                    own = dict(extra, **({vllm_worker.CAPTURE_KEY: request_id} if request.capture else {}))
                    jobs.append((r, i, request_id, own))
            outputs = self._run(requests, jobs, results_root, max_new_tokens, progress)
            captured = self._collect([request_id for r, _, request_id, _ in jobs if requests[r].capture])
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                self.llm.collective_rpc("toolshift_reset", args=(steering_keys, hook_keys))
            raise
        answers = self.llm.collective_rpc("toolshift_reset", args=(steering_keys, hook_keys))
        errors = [message for found in answers for message in found]
        if errors:
            raise RuntimeError(f"engine vllm: a vllm-lens hook failed, the results are void: {errors[0]}")
        return self._results(requests, jobs, outputs, captured, max_new_tokens)

    def _run(
        self,
        requests: Sequence[RunRequest],
        jobs: list[tuple[int, int, str, dict[str, Any]]],
        results_root: str | os.PathLike[str],
        max_new_tokens: int,
        progress: bool,
    ) -> dict[str, Any]:
        """Feed every episode to the engine loop (at most `window` in flight); the finished outputs by id."""
        from tqdm.auto import tqdm

        engine = self.llm.llm_engine
        done: dict[str, Any] = {}
        self._counted: dict[str, tuple[str, Any]] = {}
        pending = 0
        bar = tqdm(
            total=len(jobs), desc="generate (vllm)", unit="episode", file=sys.stderr, disable=not progress
        )
        with bar:
            try:
                for r, i, request_id, extra in jobs:
                    while pending >= self.window:
                        pending -= self._step(engine, done, bar)
                    prompt = self._prompt(requests[r].episodes[i], results_root)
                    self._counted[request_id] = (prompt["prompt"], prompt.pop("_rendered"))
                    salt = extra.get("_steering_id") or extra.get("_hook_id")
                    if salt:  # should prefix caching be on: never share KV across interventions
                        prompt["cache_salt"] = salt
                    engine.add_request(request_id, prompt, self._params(max_new_tokens, extra))
                    pending += 1
                while engine.has_unfinished_requests():
                    self._step(engine, done, bar)
            except BaseException:
                unfinished = [request_id for _, _, request_id, _ in jobs if request_id not in done]
                engine.abort_request(unfinished)
                raise
        missing = [request_id for _, _, request_id, _ in jobs if request_id not in done]
        if missing:
            raise RuntimeError(f"engine vllm: {len(missing)} episode(s) did not finish (first: {missing[0]})")
        return done

    @staticmethod
    def _step(engine: Any, done: dict[str, Any], bar: Any) -> int:
        finished = 0
        for output in engine.step():
            if output.finished:
                done[output.request_id] = output
                finished += 1
        bar.update(finished)
        return finished

    def _collect(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The captured states of `keys` from the workers: (n_layers, hidden) float32 each."""
        if not keys:
            return {}
        import pickle

        merged: dict[str, dict[int, np.ndarray]] = {}
        for payload in self.llm.collective_rpc("toolshift_pop_captured", args=(keys,)):
            for key, layers in pickle.loads(payload).items():
                merged.setdefault(key, {}).update(layers)
        states = {}
        for key in keys:
            layers = merged.get(key, {})
            if sorted(layers) != list(range(self.n_layers)):
                raise RuntimeError(
                    f"engine vllm: request {key}: captured layers {sorted(layers)} of {self.n_layers}"
                )
            states[key] = np.stack([layers[i] for i in range(self.n_layers)]).astype(np.float32, copy=False)
        return states

    def _results(
        self,
        requests: Sequence[RunRequest],
        jobs: list[tuple[int, int, str, dict[str, Any]]],
        outputs: dict[str, Any],
        captured: dict[str, np.ndarray],
        max_new_tokens: int,
    ) -> list[RunResult]:
        tokenizer = getattr(self.processor, "tokenizer", self.processor)
        counter = token_counter(self.processor, self.adapter)
        rows: list[list[dict[str, Any]]] = [[] for _ in requests]
        states: list[list[np.ndarray]] = [[] for _ in requests]
        for r, i, request_id, _ in jobs:
            output = outputs[request_id]
            tokens = list(output.outputs[0].token_ids)
            n_new = next((k for k, t in enumerate(tokens) if t in self._stop_ids), len(tokens))
            n_new = stop_string_cut(tokenizer, tokens, n_new, self.adapter.stop_strings)
            episode = requests[r].episodes[i]
            text, rendered = self._counted[request_id]
            counts = counter.counts(list(output.prompt_token_ids), text, rendered)
            rows[r].append(
                {
                    "prompt_id": episode["prompt_id"],
                    "condition": episode["condition"],
                    "response": tokenizer.decode(tokens[:n_new], skip_special_tokens=True),
                    "n_prompt_tokens": len(output.prompt_token_ids),
                    "n_new_tokens": int(n_new),
                    "max_new_tokens": int(max_new_tokens),
                    "do_sample": False,
                    **{column: int(counts[column]) for column in TOKEN_COLUMNS},
                }
            )
            if requests[r].capture:
                states[r].append(captured[request_id])
        results = []
        for r, request in enumerate(requests):
            table = pd.DataFrame(rows[r], columns=list(GENERATION_COLUMNS))
            array = None
            if request.capture:
                empty = np.zeros((0, self.n_layers, self.hidden_size), np.float32)
                array = np.stack(states[r]) if states[r] else empty
            results.append(RunResult(table=table, states=array, engine=self.name))
        return results


# --------------------------------------------------------------------------- helpers


def _check_layer(layer: Any, n_layers: int) -> int:
    if not isinstance(layer, int | np.integer) or not -n_layers <= int(layer) < n_layers:
        raise ConfigError(f"layer {layer!r} is out of range for a decoder with {n_layers} layers")
    return int(layer) % n_layers


def _pickle(obj: Any) -> bytes:
    import pickle

    return pickle.dumps(obj)


def _stop_settings(generation_config: Any, processor: Any) -> tuple[set[int], float]:
    """The HF engine's stop ids (generation config eos, and pad: its own, else the tokenizer's, else eos) and
    the generation config's repetition_penalty (HF applies it in greedy decoding too)."""
    eos = generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list | tuple) else [eos] if eos is not None else [])
    pad = generation_config.pad_token_id
    if pad is None:
        tokenizer = getattr(processor, "tokenizer", processor)
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = eos[0] if isinstance(eos, list | tuple) and eos else eos
    if pad is not None:
        ids.add(int(pad))
    penalty = generation_config.repetition_penalty
    return {int(i) for i in ids}, float(penalty) if penalty is not None else 1.0
