"""Stages `validate_runs`, `validate_planted`, `validate_figstep`, `validate_planted_model`
(rules/inference.smk, rules/validation.smk): run contracts, planted truth, FigStep fidelity and the
planted worlds' recovery and world x claim table."""
