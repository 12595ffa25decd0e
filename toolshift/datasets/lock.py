"""`make lock-data`: the committed dataset lock updated from what runs found, never by a run itself.

A run reads the committed `config/datasets.lock.yaml` and records the hashes it lacks in
`{results}/datasets.lock.yaml` (toolshift.datasets.downloads). This command:

- copies those new entries into the committed lock (an entry both hold with different hashes is refused
  with one line: accept one with `--refresh`);
- `--refresh RELPATH` (`make lock-data REFRESH="a b"`) re-hashes those files, from the mirror when given,
  else the download cache, after checking that they decode, and replaces their entries: how a changed
  upstream file is accepted on purpose, after a sha256 mismatch named it.

    python -m toolshift.datasets.lock [--lock config/datasets.lock.yaml] [--results results]
        [--mirror DIR] [--cache DIR] [--refresh RELPATH ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from toolshift.datasets.downloads import (
    DEFAULT_CACHE_SUBDIR,
    DEFAULT_LOCK,
    RUN_LOCK_NAME,
    check_relpath,
    decode_problem,
    read_lock,
    sha256_of,
    write_lock,
)
from toolshift.errors import DataError


def merge_run_lock(lock: str | os.PathLike[str], run_lock: str | os.PathLike[str]) -> list[str]:
    """Copy the entries of `run_lock` that `lock` lacks into `lock`; the relpaths added. An entry both hold
    with different hashes raises DataError naming both files and the fix (nothing is written then)."""
    ours, found = read_lock(lock), read_lock(run_lock)
    for relpath, sha in sorted(found.items()):
        if relpath in ours and ours[relpath] != sha:
            raise DataError(
                f"{relpath}: {lock} records {ours[relpath]}, {run_lock} records {sha}; accept the file as it "
                f"is now with `make lock-data REFRESH={relpath}`"
            )
    added = sorted(set(found) - set(ours))
    if added:
        write_lock(lock, {**ours, **{r: found[r] for r in added}})
    return added


def refresh_entries(
    lock: str | os.PathLike[str], relpaths: list[str], folder: str | os.PathLike[str]
) -> dict[str, str]:
    """Re-hash `relpaths` as they are under `folder` (the mirror or the download cache), each checked to
    decode, and write them into `lock`; relpath -> new sha256. DataError (one line) names a file that is
    missing, does not decode, or whose hash the registry pins (no lock holds those)."""
    from toolshift.datasets.sources import BENCHMARKS

    pinned = {f.relpath for spec in BENCHMARKS.values() for f in spec.files if f.sha256}
    entries, new = read_lock(lock), {}
    for relpath in relpaths:
        check_relpath(relpath, "--refresh")
        if relpath in pinned:
            raise DataError(
                f"{relpath}: the registry pins its hash (toolshift.datasets.sources); no lock holds it"
            )
        path = Path(folder) / relpath
        if not path.is_file():
            raise DataError(
                f"{path}: file not found (REFRESH takes files from DATA_MIRROR, else the download cache)"
            )
        problem = decode_problem(path)
        if problem is not None:
            raise DataError(f"{path}: {problem}; not recorded")
        new[relpath] = sha256_of(path)
    if new:
        write_lock(lock, {**entries, **new})
    return new


def main(argv: list[str] | None = None) -> int:
    """The command line of `make lock-data` (module docstring); one line per change, exit 1 on a problem."""
    parser = argparse.ArgumentParser(
        prog="python -m toolshift.datasets.lock", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="the committed lock file")
    parser.add_argument("--results", type=Path, default=Path("results"), help="the results root of the runs")
    parser.add_argument("--mirror", type=Path, default=None, help="data_mirror, where --refresh reads files")
    parser.add_argument(
        "--cache", type=Path, default=None, help="data_cache (default RESULTS/cache/downloads)"
    )
    parser.add_argument("--refresh", action="append", default=[], metavar="RELPATH", help="re-hash this file")
    args = parser.parse_args(argv)
    try:
        run_lock = args.results / RUN_LOCK_NAME
        if args.refresh:
            folder = args.mirror or args.cache or args.results / DEFAULT_CACHE_SUBDIR
            for relpath, sha in refresh_entries(args.lock, args.refresh, folder).items():
                print(f"{args.lock}: {relpath} -> {sha} (refreshed from {folder})")
            if run_lock.is_file():  # the run's stale entries of the refreshed files go
                kept = {r: h for r, h in read_lock(run_lock).items() if r not in args.refresh}
                write_lock(run_lock, kept)
        added = merge_run_lock(args.lock, run_lock) if run_lock.is_file() else []
        print(f"{args.lock}: {len(added)} new entr{'y' if len(added) == 1 else 'ies'} from {run_lock}")
    except DataError as exc:
        print(f"toolshift error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
