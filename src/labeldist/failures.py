"""Which jobs of a Snakemake run failed, and why: the report of a `--keep-going` run.

With `--keep-going` one failing dataset (or model) does not stop the others, but Snakemake runs no job
downstream of a failure, so no rule can write this report; it is read afterwards from the logs:

    python -m labeldist.failures                      # the newest run's log, a table on stdout
    python -m labeldist.failures --csv results/failures.csv --log .snakemake/log/<run>.snakemake.log

Each failed job comes from an `Error in rule ...` block (or an `...Exception in rule ...` line) of the
Snakemake log (`.snakemake/log/*.snakemake.log`); its reason is the first `ERROR:` line of the job's own
log (what `labeldist.runlog.rule_log` writes for a user-facing LabeldistError), else the last line of a
traceback there, else Snakemake's own message. Hand-written: Snakemake has no machine-readable list of
failed jobs (its `--summary` reports files, not failures).
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .io import atomic_path

COLUMNS = ["rule", "jobid", "wildcards", "log", "reason", "outputs"]
_ERROR_BLOCK = re.compile(r"^Error in rule (?P<rule>\S+?):\s*$")
_EXCEPTION_LINE = re.compile(r"^(?P<exc>\w+(?:Exception|Error)) in rule (?P<rule>\S+?)(?: in file .*)?:?\s*$")
_FIELD = re.compile(r"^\s{4}(?P<key>\w+): (?P<value>.*)$")


@dataclass
class Failure:
    """One failed job: its rule, Snakemake job id, wildcards, log file, outputs and the reason."""

    rule: str
    jobid: str = ""
    wildcards: str = ""
    log: str = ""
    reason: str = ""
    outputs: list[str] = field(default_factory=list)

    def row(self) -> dict[str, str]:
        """Return the failure as a CSV row (outputs joined by '; ')."""
        return {"rule": self.rule, "jobid": self.jobid, "wildcards": self.wildcards, "log": self.log,
                "reason": self.reason, "outputs": "; ".join(self.outputs)}


def latest_snakemake_log(workdir: str | Path = ".") -> Path | None:
    """Return the newest `.snakemake/log/*.snakemake.log` under `workdir`, or None when there is none."""
    logs = sorted((Path(workdir) / ".snakemake" / "log").glob("*.snakemake.log"))
    return logs[-1] if logs else None


def parse_snakemake_log(text: str) -> list[Failure]:
    """Return the failed jobs a Snakemake log reports, in log order (one per job id)."""
    failures: list[Failure] = []
    current: Failure | None = None
    for line in text.splitlines():
        block = _ERROR_BLOCK.match(line)
        exc = _EXCEPTION_LINE.match(line)
        if block or exc:
            current = Failure(rule=(block or exc).group("rule"))
            if exc:
                current.reason = exc.group("exc")
            failures.append(current)
            continue
        m = _FIELD.match(line) if current is not None else None
        if m is None:
            if current is not None and not line.startswith(" "):
                current = None
            continue
        key, value = m.group("key"), m.group("value").strip()
        if key == "jobid":
            current.jobid = value
        elif key == "wildcards":
            current.wildcards = value
        elif key == "output":
            current.outputs = [v.strip() for v in value.split(",") if v.strip()]
        elif key == "log":
            current.log = value.split(" (check log", 1)[0].strip()
        elif key == "message" and value not in ("None", "") and not current.reason:
            current.reason = value
    unique: dict[tuple[str, str], Failure] = {}
    for f in failures:
        key = (f.rule, f.jobid or str(len(unique)))
        if key in unique:  # the same job reported twice (an error block and an exception line)
            unique[key].reason = unique[key].reason or f.reason
        else:
            unique[key] = f
    return list(unique.values())


def reason_from_log(path: str | Path) -> str:
    """Return why a job failed, from its log: the first `ERROR:` line (labeldist's one-line user
    error), else the last line of the last traceback, else the last non-empty line; "" if unreadable."""
    try:
        lines = [ln.rstrip() for ln in Path(path).read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    for ln in lines:
        if ln.startswith("ERROR: "):
            return ln[len("ERROR: "):]
    tb = [i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)")]
    if tb:
        tail = [ln for ln in lines[tb[-1]:] if ln and not ln.startswith((" ", "Traceback"))]
        if tail:
            return tail[-1]
    rest = [ln for ln in lines if ln.strip()]
    return rest[-1] if rest else ""


def summarise_failures(workdir: str | Path = ".", log: str | Path | None = None) -> list[Failure]:
    """Return the failed jobs of the run whose Snakemake log is `log` (default: the newest under
    `workdir`), each with the reason read from its own log file (paths relative to `workdir`)."""
    log_path = Path(log) if log is not None else latest_snakemake_log(workdir)
    if log_path is None or not log_path.is_file():
        return []
    failures = parse_snakemake_log(log_path.read_text(encoding="utf-8", errors="replace"))
    for f in failures:
        if f.log:
            reason = reason_from_log(Path(workdir) / f.log)
            f.reason = reason or f.reason
    return failures


def format_failures(failures: Sequence[Failure]) -> str:
    """Return a plain-text report: one paragraph per failed job, or a line saying there were none."""
    if not failures:
        return "No failed jobs.\n"
    out = [f"{len(failures)} failed job(s):"]
    for f in failures:
        out.append(f"- rule {f.rule}" + (f" (job {f.jobid})" if f.jobid else "")
                   + (f" [{f.wildcards}]" if f.wildcards else ""))
        out.append(f"    reason:  {f.reason or 'see the Snakemake log'}")
        if f.log:
            out.append(f"    log:     {f.log}")
        if f.outputs:
            out.append(f"    outputs: {', '.join(f.outputs)}")
    return "\n".join(out) + "\n"


def write_failures_csv(failures: Sequence[Failure], path: str | Path) -> None:
    """Write the failures as CSV (columns COLUMNS; a header only when there are none), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    for f in failures:
        writer.writerow(f.row())
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the failures of a run (and write them as CSV); exit 1 if any job failed."""
    parser = argparse.ArgumentParser(prog="python -m labeldist.failures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=".", help="the folder Snakemake ran in (default: .)")
    parser.add_argument("--log", default=None, help="a Snakemake log (default: the newest in .snakemake/log)")
    parser.add_argument("--csv", default=None, help="also write the failures to this CSV file")
    args = parser.parse_args(argv)
    failures = summarise_failures(args.workdir, args.log)
    sys.stdout.write(format_failures(failures))
    if args.csv:
        write_failures_csv(failures, args.csv)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
