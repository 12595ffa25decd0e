"""Stage `model` and the model side of inference (rules/models.smk, rules/inference.smk): family adapters,
loading, fixture models, generation, capture hooks and the inference engines."""
