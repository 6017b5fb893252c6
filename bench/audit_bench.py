"""Benchmark of the data audit (not a test): Adult as shipped, and Adult grown to 1,000,000 rows.

    /work/venv-scratch/bin/python bench/audit_bench.py [--rows 1000000] [--seed 0]

The grown data set is a seeded resample of every Adult row (train and test files) with a
little Gaussian noise on the numeric columns (sd = 2 % of the column's sd, rounded to whole
numbers as in the source, kept >= 0). It is written as a gzip CSV in Adult's own format, so
the end-to-end figure includes parsing it through the spec (what `fairloop audit --data FILE`
does). Printed: wall-clock seconds per stage, the audit's cost per 1,000 rows on both sizes,
and their ratio (1.0 = the audit scales linearly; below 1 = fixed costs dominate on Adult).
The target is <= 30 s for the 1M-row audit on a 2-core machine.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def grown_adult(rows: int, seed: int, raw_files: list[tuple[Path, int]], columns: list[str], numeric: list[str]) -> pd.DataFrame:
    """Seeded resample of the raw Adult rows with noise on the numeric columns."""
    raw = pd.concat(
        [pd.read_csv(path, header=None, names=columns, skipinitialspace=True, skiprows=skip or None) for path, skip in raw_files],
        ignore_index=True,
    )
    rng = np.random.default_rng(seed)
    grown = raw.iloc[rng.integers(0, len(raw), rows)].reset_index(drop=True)
    for column in numeric:
        values = pd.to_numeric(grown[column])
        noise = rng.normal(0.0, 0.02 * values.std(), rows)
        grown[column] = np.clip(np.round(values + noise), 0, None).astype(int)
    return grown


def timed(label: str, action, times: dict):
    started = time.perf_counter()
    result = action()
    times[label] = time.perf_counter() - started
    print(f"  {label:<44} {times[label]:7.2f} s", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from fairloop.audit.checks import run_audit
    from fairloop.audit.schema import gx_frame, learn_reference, validate_schema
    from fairloop.data.datasets import load_data_file, load_dataset

    times: dict[str, float] = {}
    print(f"Audit benchmark ({os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f})")
    timed("import great_expectations", lambda: __import__("great_expectations"), times)
    spec_path = PROJECT / "datasets" / "adult.yaml"
    loaded = timed("load Adult through its spec", lambda: load_dataset(spec_path), times)
    spec = loaded.spec
    adult = loaded.all_rows()
    reference = learn_reference(spec, adult, "Adult (train and test files)")

    with tempfile.TemporaryDirectory() as scratch:
        gx_root = Path(scratch) / "gx"  # a throw-away context: the benchmark never touches the repo's gx/
        print(f"Adult: {len(adult):,} rows")
        timed("Adult: GX validation only (in memory)", lambda: validate_schema(spec, gx_frame(spec, adult), reference), times)
        report = timed("Adult: run_audit", lambda: run_audit(spec, adult, source="adult", reference=reference, gx_root=gx_root), times)
        print(f"  -> verdict {report.verdict}; {len(report.reasons)} reasons")

        grown_path = Path(scratch) / "adult-grown.csv.gz"
        files = [((spec_path.parent / f.path).resolve(), f.skip_rows) for f in spec.files]
        grown = grown_adult(args.rows, args.seed, files, spec.format.columns, spec.features.numeric)
        with gzip.open(grown_path, "wt", compresslevel=1, newline="") as handle:
            grown.to_csv(handle, header=False, index=False)
        del grown
        print(f"Adult grown to {args.rows:,} rows (seed {args.seed}, {grown_path.stat().st_size / 1e6:.1f} MB gzip)")
        _, big = timed("1M: parse the file through the spec", lambda: load_data_file(spec_path, grown_path), times)
        timed("1M: GX validation only (in memory)", lambda: validate_schema(spec, gx_frame(spec, big), reference), times)
        report = timed("1M: run_audit", lambda: run_audit(spec, big, source=str(grown_path), reference=reference, gx_root=gx_root), times)
        print(f"  -> verdict {report.verdict}; proxies fitted on {report.proxy_sample_rows:,} rows")
        # What `fairloop audit --data FILE` adds: validation in the file-backed context, results and Data Docs
        timed("1M: run_audit in the GX project + Data Docs", lambda: run_audit(
            spec, big, source=str(grown_path), reference=reference, gx_root=gx_root, write_gx=True), times)
        for reason in report.reasons:
            print(f"     - {reason[:200]}")

    small_rows, big_rows = len(adult), len(big)
    per_small = times["Adult: run_audit"] / small_rows * 1000
    per_big = times["1M: run_audit"] / big_rows * 1000
    end_to_end = times["1M: parse the file through the spec"] + times["1M: run_audit"]
    with_docs = times["1M: parse the file through the spec"] + times["1M: run_audit in the GX project + Data Docs"]
    print("Summary")
    print(f"  run_audit ms per 1,000 rows: Adult {per_small:.3f}, 1M {per_big:.3f}; ratio 1M / Adult {per_big / per_small:.2f}")
    print(f"  run_audit 1M / Adult wall-clock: {times['1M: run_audit'] / times['Adult: run_audit']:.1f}x for "
          f"{big_rows / small_rows:.1f}x the rows")
    print(f"  GX share of run_audit: Adult {times['Adult: GX validation only (in memory)'] / times['Adult: run_audit']:.0%}, "
          f"1M {times['1M: GX validation only (in memory)'] / times['1M: run_audit']:.0%}")
    print(f"  1M end to end (parse + audit): {end_to_end:.1f} s; with GX project and Data Docs (the CLI's path): "
          f"{with_docs:.1f} s; target <= 30 s: {'met' if max(end_to_end, with_docs) <= 30 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(PROJECT / "src"))
    sys.exit(main())
