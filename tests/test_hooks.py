"""Residual-stream hooks: add a vector, ablate a direction, capture; hooks are always removed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from toolshift.analysis.interventions import parse_intervention_id
from toolshift.analysis.steering import residual_edit
from toolshift.errors import ConfigError
from toolshift.models.fixtures import FIXTURE_FAMILIES, synthetic_episodes
from toolshift.models.generation import encode, generate
from toolshift.models.hooks import (
    ResidualEdit,
    ablate_direction,
    add_vector,
    apply_intervention,
    capture_last_token,
)

LAYER = 1


@pytest.fixture(scope="session")
def results_root(tmp_path_factory):
    return tmp_path_factory.mktemp("hooks_results")


@pytest.fixture(scope="session")
def episodes(results_root):
    return synthetic_episodes(results_root, 3)


@pytest.fixture(scope="session")
def models(fixture_models):
    return fixture_models


@pytest.fixture(scope="session")
def inputs(models, episodes, results_root):
    return {f: encode(m, episodes, results_root) for f, m in models.items()}


def random_vector(hidden: int, seed: int, scale: float = 0.05) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(hidden) * scale).astype(np.float32)


def hook_counts(loaded) -> list[tuple[int, int]]:
    layers = loaded.adapter.decoder_layers(loaded.model)
    return [(len(layer._forward_hooks), len(layer._forward_pre_hooks)) for layer in layers]


def forward(loaded, inputs, **kwargs):
    with torch.inference_mode():
        return loaded.model(**inputs, **kwargs)


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_add_with_alpha_zero_is_identical_to_no_hook(family, models, inputs, episodes, results_root):
    loaded = models[family]
    v = random_vector(loaded.hidden_size, 0)
    plain = forward(loaded, inputs[family]).logits
    with add_vector(loaded, LAYER, v, alpha=0.0):
        zero = forward(loaded, inputs[family]).logits
    assert torch.equal(plain, zero)
    df, states = generate(loaded, episodes, results_root, max_new_tokens=6, progress=False)
    hooked = ResidualEdit(kind="add", layer=LAYER, vector=v, alpha=0.0)
    df0, states0 = generate(
        loaded, episodes, results_root, max_new_tokens=6, intervention=hooked, progress=False
    )
    assert df0.equals(df)
    np.testing.assert_array_equal(states0, states)


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
@pytest.mark.parametrize("alpha", [1.0, -2.5])
def test_add_changes_the_layer_output_by_exactly_alpha_v(family, alpha, models, inputs):
    loaded = models[family]
    v = random_vector(loaded.hidden_size, 1)
    with capture_last_token(loaded) as base:
        forward(loaded, inputs[family])
    with add_vector(loaded, LAYER, v, alpha=alpha), capture_last_token(loaded) as added:
        forward(loaded, inputs[family])
    before, after = base.array(), added.array()
    np.testing.assert_array_equal(after[:, :LAYER], before[:, :LAYER])  # earlier layers untouched
    np.testing.assert_allclose(
        after[:, LAYER] - before[:, LAYER],
        np.broadcast_to(alpha * v, before[:, LAYER].shape),
        rtol=0,
        atol=1e-6,
    )
    assert not np.allclose(after[:, LAYER + 1 :], before[:, LAYER + 1 :], atol=1e-6)  # and it propagates
    # the same through a ResidualEdit
    with apply_intervention(loaded, ResidualEdit("add", LAYER, v, alpha)), capture_last_token(loaded) as via:
        forward(loaded, inputs[family])
    np.testing.assert_array_equal(via.array(), after)


def test_add_acts_on_generated_positions_too(models, inputs):
    """With the hook, cached greedy generation equals argmax of a full forward pass with the same hook
    over prompt + generated tokens; without the hook in that forward pass it does not."""
    loaded = models["llava"]
    enc = inputs["llava"]
    v = random_vector(loaded.hidden_size, 2, scale=1.0)
    n_new = 6
    with add_vector(loaded, LAYER, v, alpha=3.0), torch.inference_mode():
        seq = loaded.model.generate(**enc, max_new_tokens=n_new, min_new_tokens=n_new, do_sample=False)
    prompt_len = enc["input_ids"].shape[1]
    full = dict(
        enc,
        input_ids=seq,
        attention_mask=torch.cat([enc["attention_mask"], torch.ones_like(seq[:, prompt_len:])], 1),
    )
    generated = seq[:, prompt_len:]
    with add_vector(loaded, LAYER, v, alpha=3.0):
        with_hook = forward(loaded, full).logits[:, prompt_len - 1 : -1].argmax(-1)
    without_hook = forward(loaded, full).logits[:, prompt_len - 1 : -1].argmax(-1)
    assert torch.equal(with_hook, generated)
    assert not torch.equal(without_hook[:, 1:], generated[:, 1:])


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_ablation_leaves_no_component_between_layers(family, models, inputs):
    loaded = models[family]
    layers = loaded.adapter.decoder_layers(loaded.model)
    direction = random_vector(loaded.hidden_size, 3, scale=1.0)
    unit = torch.from_numpy(direction / np.linalg.norm(direction))
    seen: list[torch.Tensor] = []
    # probes registered after the ablation hooks see what flows between layers
    with ablate_direction(loaded, direction):
        probes = [layers[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))]
        probes += [
            layer.register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
            for layer in layers
        ]
        try:
            out = forward(loaded, inputs[family], output_hidden_states=True)
        finally:
            for probe in probes:
                probe.remove()
    assert len(seen) == loaded.n_layers + 1
    # transformers' own recorder runs after our hooks: it sees the ablated stream too
    for hf, mine in zip(out.hidden_states[:-1], seen[:-1], strict=True):
        assert torch.equal(hf, mine)
    for h in seen:
        component = (h @ unit).abs()
        assert (component <= 1e-4 * h.norm(dim=-1)).all()
    # and the ablation changed something: without it the component is not small
    plain = forward(loaded, inputs[family], output_hidden_states=True).hidden_states[2]
    assert ((plain @ unit).abs() > 1e-2 * plain.norm(dim=-1)).any()


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_ablate_refusal_removes_the_refusal_direction_at_every_layer(family, models, inputs):
    """The `ablate_refusal_{condition}` hook, built from a vectors file as the runner builds it: after it
    the residual stream has ~0 component along r_hat at every layer and position (prompt states and the
    last-token capture), while the tool vector's direction is left in place."""
    loaded = models[family]
    n, hidden = loaded.n_layers, loaded.hidden_size
    refusal = np.stack([random_vector(hidden, 10 + i, scale=1.0) for i in range(n)])
    tool = np.stack([random_vector(hidden, 20 + i, scale=1.0) for i in range(n)])
    vectors = xr.Dataset(
        {"tool_vector": (("layer", "hidden"), tool), "refusal_direction": (("layer", "hidden"), refusal)},
        coords={"layer": np.arange(n)},
    )
    spec = parse_intervention_id("ablate_refusal_tool")
    hook = residual_edit(spec, vectors, LAYER)
    assert hook.kind == "ablate" and hook.layer is None
    r_hat = torch.from_numpy(refusal[LAYER] / np.linalg.norm(refusal[LAYER]))
    v_hat = torch.from_numpy(tool[LAYER] / np.linalg.norm(tool[LAYER]))
    with apply_intervention(loaded, hook), capture_last_token(loaded) as store:
        out = forward(loaded, inputs[family], output_hidden_states=True)
    last = torch.from_numpy(store.array())  # (batch, n_layers, hidden): every layer's output
    states = [*out.hidden_states[:-1], *last.unbind(1)]  # the last hidden state is after the final norm
    assert len(states) == 2 * n
    for h in states:
        assert ((h @ r_hat).abs() <= 1e-4 * h.norm(dim=-1)).all()
    assert any(((h @ v_hat).abs() > 1e-2 * h.norm(dim=-1)).any() for h in states)
    plain = forward(loaded, inputs[family], output_hidden_states=True).hidden_states[2]
    assert ((plain @ r_hat).abs() > 1e-2 * plain.norm(dim=-1)).any()  # without the hook it is there


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_control_edits_from_a_vectors_file_act_as_their_kinds_say(family, models, inputs):
    """The specificity controls through the runner's path (vectors file -> residual_edit -> hook):
    `subtract_direct` adds -v at the layer, `shift_a2_text_trail` adds twice the control's shift rescaled
    to |v|, and `covrandom_ablate_s0` leaves no component along its covariance-random direction at any
    layer (the same direction `covrandom_a1_s0` adds)."""
    loaded = models[family]
    n, hidden = loaded.n_layers, loaded.hidden_size
    tool = np.stack([random_vector(hidden, 30 + i, scale=0.2) for i in range(n)])
    trail = np.stack([random_vector(hidden, 40 + i, scale=1.0) for i in range(n)])
    basis = np.stack(
        [np.stack([random_vector(hidden, 50 + i, 1.0), random_vector(hidden, 60 + i, 0.3)]) for i in range(n)]
    )
    vectors = xr.Dataset(
        {
            "tool_vector": (("layer", "hidden"), tool),
            "shift": (("condition", "layer", "hidden"), np.stack([np.zeros_like(tool), trail])),
            "cov_basis": (("layer", "cov_component", "hidden"), basis),
        },
        coords={"layer": np.arange(n), "condition": ["direct", "text_trail"]},
    )
    with capture_last_token(loaded) as base:
        forward(loaded, inputs[family])
    expected = {
        "subtract_direct": -tool[LAYER],
        "shift_a2_text_trail": 2 * trail[LAYER] / np.linalg.norm(trail[LAYER]) * np.linalg.norm(tool[LAYER]),
    }
    for iid, change in expected.items():
        with apply_intervention(loaded, residual_edit(parse_intervention_id(iid), vectors, LAYER)):
            with capture_last_token(loaded) as edited:
                forward(loaded, inputs[family])
        np.testing.assert_allclose(
            edited.array()[:, LAYER] - base.array()[:, LAYER],
            np.broadcast_to(change, base.array()[:, LAYER].shape),
            atol=1e-5,
        )
    added = residual_edit(parse_intervention_id("covrandom_a1_s0"), vectors, LAYER).vector
    hook = residual_edit(parse_intervention_id("covrandom_ablate_s0"), vectors, LAYER)
    assert hook.kind == "ablate" and hook.layer is None
    np.testing.assert_allclose(hook.vector, added / np.linalg.norm(added), rtol=1e-6)
    unit = torch.from_numpy(hook.vector)
    with apply_intervention(loaded, hook), capture_last_token(loaded) as store:
        out = forward(loaded, inputs[family], output_hidden_states=True)
    for h in [*out.hidden_states[:-1], *torch.from_numpy(store.array()).unbind(1)]:
        assert ((h @ unit).abs() <= 1e-4 * h.norm(dim=-1)).all()


@pytest.mark.parametrize("family", FIXTURE_FAMILIES)
def test_hooks_are_removed_afterwards_even_on_error(family, models, inputs):
    loaded = models[family]
    forward(loaded, inputs[family], output_hidden_states=True)  # let transformers install its own recorders
    before = hook_counts(loaded)
    v = random_vector(loaded.hidden_size, 4)
    with add_vector(loaded, LAYER, v), ablate_direction(loaded, v), capture_last_token(loaded):
        assert hook_counts(loaded) != before
    assert hook_counts(loaded) == before
    for make in (
        lambda: add_vector(loaded, 0, v),
        lambda: ablate_direction(loaded, v),
        lambda: capture_last_token(loaded),
    ):
        with pytest.raises(RuntimeError, match="boom"), make():
            raise RuntimeError("boom")
        assert hook_counts(loaded) == before


def test_capture_ignores_decoding_steps(models, inputs):
    loaded = models["qwen2_5_vl"]
    with capture_last_token(loaded) as store, torch.inference_mode():
        loaded.model.generate(**inputs["qwen2_5_vl"], max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert len(store.records) == 1 and store.array().shape == (3, loaded.n_layers, loaded.hidden_size)


def test_bad_interventions_are_config_errors(models):
    loaded = models["llava"]
    v = np.ones(loaded.hidden_size, np.float32)
    with pytest.raises(ConfigError, match="kind"):
        ResidualEdit("scale", 1, v)
    with pytest.raises(ConfigError, match="needs a layer"):
        ResidualEdit("add", None, v)
    with pytest.raises(ConfigError, match="finite"):
        ResidualEdit("ablate", None, np.array([np.nan, 1.0]))
    with pytest.raises(ConfigError, match="out of range"), add_vector(loaded, 4, v):
        pass
    with pytest.raises(ConfigError, match=r"shape \(64,\)"), add_vector(loaded, 0, v[:3]):
        pass
    with (
        pytest.raises(ConfigError, match="zero norm"),
        ablate_direction(loaded, np.zeros(loaded.hidden_size)),
    ):
        pass
    assert ResidualEdit("ablate", None, v).vector.dtype == np.float32


# ------------------------------------------------ the store and helpers on plain tensors (no model needed)


def test_last_token_store_keeps_the_last_position_of_each_prefill_pass():
    from toolshift.models.hooks import LastTokenStore

    store = LastTokenStore(2)
    first = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)  # (batch, positions, hidden)
    store._record(0, first)
    store._record(1, first + 100)
    store._record(0, torch.ones(2, 1, 4))  # a decoding step (one position): ignored
    store._record(1, torch.ones(2, 1, 4))
    second = -torch.arange(1 * 2 * 4, dtype=torch.float32).reshape(1, 2, 4)
    store._record(0, second)
    store._record(1, second - 1)
    out = store.array()
    assert out.shape == (3, 2, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:2, 0], first[:, -1].numpy())
    np.testing.assert_array_equal(out[:2, 1], first[:, -1].numpy() + 100)
    np.testing.assert_array_equal(out[2, 0], second[0, -1].numpy())
    store._record(0, torch.zeros(5, 2, 4))  # a two-token prompt is a prefill pass too
    store._record(1, torch.zeros(5, 2, 4))
    assert store.array().shape == (8, 2, 4)
    store.clear()
    with pytest.raises(RuntimeError, match="^capture_last_token recorded no prefill pass$"):
        store.array()
    store._record(0, first)
    store._record(0, first)  # a new pass starts over: layer 1 of the first was never seen
    store._record(1, first)
    assert store.array().shape == (2, 2, 4)
    skipped = LastTokenStore(3)
    skipped._record(0, first)
    with pytest.raises(
        RuntimeError, match="^capture_last_token: a decoder layer was skipped in a prefill pass$"
    ):
        skipped._record(2, first)


def test_layer_output_helpers_and_checks():
    from toolshift.models.hooks import _as_tensor, _check_layer, _hidden, _replace_hidden

    h, extra = torch.ones(1, 2, 3), object()
    assert _hidden((h, extra)) is h and _hidden(h) is h
    out = _replace_hidden((torch.zeros(1), extra, "cache"), h)
    assert out[0] is h and out[1:] == (extra, "cache")
    assert _replace_hidden(torch.zeros(1), h) is h
    assert _check_layer(-4, 4) == 0 and _check_layer(3, 4) == 3 and _check_layer(np.int64(-1), 4) == 3
    with pytest.raises(ConfigError, match="^layer -5 is out of range for a decoder with 4 layers$"):
        _check_layer(-5, 4)
    assert _as_tensor([1.0, 2.0], 2, "v").dtype == torch.float32
    assert ResidualEdit("add", 0, [0.5, 1.5]).vector.dtype == np.float32  # float64 in, float32 kept
    with pytest.raises(ConfigError, match=r"^intervention kind 'scale' is not one of add, ablate$"):
        ResidualEdit("scale", 1, [1.0])
    with pytest.raises(
        ConfigError, match=r"^intervention vector must be a finite 1-d array, got shape \(1, 2\)$"
    ):
        ResidualEdit("ablate", None, [[1.0, 2.0]])
    with pytest.raises(ConfigError, match="^intervention kind 'add' needs a layer$"):
        ResidualEdit("add", None, [1.0])
