"""`python -m toolshift.judges score FILE` (`make judge-score FILE=...`): score judges against a
human-labelled file without the DAG (toolshift.judges.scoring does the work; this is its command line)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from toolshift.common.config import load_config
from toolshift.errors import ToolshiftError
from toolshift.judges import scoring
from toolshift.judges.scoring import (
    _parse_pairs,
    config_judges,
    format_scores,
    load_labelled,
    score_judges,
)

# --------------------------------------------------------------------------- command line


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m toolshift.judges", description="Judges of toolshift (see toolshift.judges.keyword)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    score = sub.add_parser(
        "score",
        help="score judges against a human-labelled file (no DAG)",
        description="\n\n".join((scoring.__doc__ or "").split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("file", help="labelled CSV, TSV, JSON or JSONL file")
    score.add_argument(
        "--judges", help="comma-separated judges (default: keyword; with --config: its judges)"
    )
    score.add_argument(
        "--lists",
        help="comma-separated keyword lists (default: every distinct list; with --config: its list)",
    )
    score.add_argument("--config", help="a toolshift config: score its judges with its options")
    score.add_argument("--model-dir", action="append", default=[], metavar="JUDGE=PATH")
    score.add_argument("--response-column")
    score.add_argument("--label-column", help="the human label (majority) column")
    score.add_argument(
        "--human-columns", help="comma-separated vote columns (an odd number) to take the majority of"
    )
    score.add_argument("--request-column", help="the request column (model and API judges)")
    score.add_argument(
        "--file-judges", help="comma-separated judge columns of the file to score ('none': none)"
    )
    score.add_argument("--format", choices=("table", "csv"), default="table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        file_judges = _split(args.file_judges)
        labelled = load_labelled(
            args.file,
            response_column=args.response_column,
            label_column=args.label_column,
            human_columns=_split(args.human_columns),
            request_column=args.request_column,
            file_judges=[] if file_judges == ["none"] else file_judges,
        )
        model_dirs = _parse_pairs(args.model_dir, "--model-dir")
        judges, lists = _split(args.judges) or ["keyword"], _split(args.lists)
        # without a config, a model judge runs with its defaults on the directory given
        options: dict[str, dict[str, Any]] = {j: {"model_dir": d} for j, d in model_dirs.items()}
        if args.config:
            judges, cfg_lists, options = config_judges(
                load_config(args.config), model_dirs, _split(args.judges)
            )
            lists = lists or cfg_lists
        table = score_judges(labelled, judges, keyword_lists=lists, options=options)
    except ToolshiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "csv":
        sys.stdout.write(table.to_csv(index=False))
        return 0
    a = labelled.attrs
    human_asr = float(labelled["human_majority"].mean())
    print(
        f"{a['path']}: {len(labelled)} responses (encoding {a['encoding']}); response column "
        f"{a['response_column']!r}, human label {a['label_column']!r}; human ASR {human_asr:.3f}"
    )
    print("positive class: unsafe (jailbroken); kappa: Cohen's kappa against the human majority")
    print(format_scores(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
