"""Where a workflow run's time went: every job's wall time and CPU time from the `benchmark:` files
Snakemake wrote under results/benchmarks/, slowest first, with totals per stage.

    python benchmarks/job_times.py [results] [--top 15]

The CPU column is the job's user + system time as Snakemake measured it (`cpu_time` of the benchmark
file); wall time on a shared machine includes waiting for a core, CPU time does not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def job_times(results: str | Path) -> pd.DataFrame:
    """One row per benchmark file under `results`/benchmarks: job (its path below that folder, without
    .tsv), stage (the first folder), seconds (wall) and cpu_seconds, slowest first."""
    root = Path(results) / "benchmarks"
    rows = []
    for path in sorted(root.rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        job = str(path.relative_to(root).with_suffix(""))
        rows.append({"job": job, "stage": job.split("/")[0], "seconds": float(frame["s"].iloc[-1]),
                     "cpu_seconds": float(frame["cpu_time"].iloc[-1])})
    if not rows:
        raise SystemExit(f"no benchmark files under {root}: run the workflow first")
    return pd.DataFrame(rows).sort_values("seconds", ascending=False, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", default="results")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    times = job_times(args.results)
    print(times.head(args.top).to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    stages = times.groupby("stage")[["seconds", "cpu_seconds"]].sum().sort_values("seconds", ascending=False)
    print("\nper stage (sums over jobs; jobs of different stages ran side by side)")
    print(stages.to_string(float_format=lambda x: f"{x:.1f}"))
    print(f"\n{len(times)} jobs: {times['seconds'].sum():.0f} s of job wall time, "
          f"{times['cpu_seconds'].sum():.0f} s of CPU time")


if __name__ == "__main__":
    main()
