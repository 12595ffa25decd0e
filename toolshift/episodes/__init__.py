"""Stage `episodes` (rules/episodes.smk): one episode per prompt and condition, the zoom tool's spec
and its calls, the crops and the override images."""
