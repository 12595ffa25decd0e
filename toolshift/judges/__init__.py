"""Stage `judge` (rules/judge.smk: prepare_judge, judge, judge_agreement): the keyword judge, the model
judges (Llama Guard, HarmBench), the API judge, the outcomes (refusal / unsafe / non-answer), judge
agreement and the `python -m toolshift.judges score` command."""
