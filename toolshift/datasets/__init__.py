"""Stage `data` (rules/data.smk: prompts, splits): benchmark sources and downloads, the prompts table,
the typographic renderings (FigStep, MM-SafetyBench), image I/O and the prompt splits."""
