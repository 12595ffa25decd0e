"""Stages `infer`, `intervene` and `infer_api` (rules/inference.smk, rules/interventions.smk): the job runner
over a model's engine, the free tool loop, the OpenAI-compatible client and the intervention-cost run."""
