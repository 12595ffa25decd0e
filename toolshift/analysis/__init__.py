"""Stages `vectors`, `asr_table` and `analysis_tables` (rules/vectors.smk, rules/stats.smk): statistics,
probes, safety vectors and their layer selection, intervention specs, and every results table."""
