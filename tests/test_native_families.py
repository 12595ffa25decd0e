

def test_generation_stops_after_a_family_stop_string(loaded, episodes, results_root):
    """Generation stops after the first stop string (the token completing it included), as the families'
    evaluations stop (Thyme at `</code>`, Mini-o3 at `</grounding>`); cutting after generating is exactly
    stopping there under greedy decoding."""
    from toolshift.models.generation import generate, stop_string_cut

    adapter = loaded.adapter
    free = adapter.stop_strings
    adapter.stop_strings = ()
    try:
        full, _ = generate(loaded, [episodes[0]], results_root, max_new_tokens=12, capture=False, progress=False)
        text = full["response"].iloc[0]
        stop = text[len(text) // 2 : len(text) // 2 + 3]
        adapter.stop_strings = (stop,)
        cut, _ = generate(loaded, [episodes[0]], results_root, max_new_tokens=12, capture=False, progress=False)
    finally:
        adapter.stop_strings = free
    response = cut["response"].iloc[0]
    assert stop in response and text.startswith(response) and len(response) < len(text)
    assert stop not in response[: -1 - max(len(t) for t in [stop])] or response.index(stop) + len(stop) <= len(response)
    assert cut["n_new_tokens"].iloc[0] < full["n_new_tokens"].iloc[0]
    tokenizer = loaded.processor.tokenizer
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n = stop_string_cut(tokenizer, ids, len(ids), (stop,))
    assert stop in tokenizer.decode(ids[:n]) and stop not in tokenizer.decode(ids[: n - 1])
