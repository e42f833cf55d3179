"""`--keep-going`: one failing dataset does not stop the others, and `labeldist.failures` lists what failed.

The workflow test runs tests/fixtures/reliability/config_keep_going.yaml in a scratch copy of the
repository: dataset `broken` passes config validation (its file exists) but its data job fails on line
18 (a record cut off mid-line); dataset `synthetic` must still be built up to its metrics. The tables
(which need every dataset's metrics) are not built: Snakemake runs nothing downstream of a failure,
which is why the failure report is a command reading the logs, not a rule (about 1.5 min).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from labeldist.failures import Failure, format_failures, main, parse_snakemake_log, reason_from_log, summarise_failures

from .test_resume import RUN_TIMEOUT, log_tail, repo_copy, start

CONFIG = "tests/fixtures/reliability/config_keep_going.yaml"

SNAKEMAKE_LOG = """\
Select jobs to execute...
Error in rule prepare_data:
    message: None
    jobid: 2
    input: data/broken.jsonl
    output: results/data/broken/train.jsonl, results/data/broken/dev.jsonl
    log: results/logs/data/broken.log (check log file(s) for error details)
Logfile results/logs/data/broken.log:
================================================================================
ERROR: data/broken.jsonl, line 18: malformed JSON
================================================================================
[Sat Nov 21 13:46:04 2026]
Finished jobid: 3 (Rule: base_model)
MissingOutputException in rule generate_baseline in file workflow/rules/generate.smk, line 11:
Job 7  completed successfully, but some output files are missing.
Error in rule sft:
    jobid: 9
    output: results/models/synthetic/tiny/sft
    log: results/logs/finetune/synthetic/tiny/sft.log (check log file(s) for error details)
Exiting because a job execution failed. Look above for error messages
"""


def test_parse_snakemake_log_lists_every_failed_job(tmp_path):
    failures = parse_snakemake_log(SNAKEMAKE_LOG)
    assert [(f.rule, f.jobid) for f in failures] == [("prepare_data", "2"), ("generate_baseline", ""), ("sft", "9")]
    assert failures[0].outputs == ["results/data/broken/train.jsonl", "results/data/broken/dev.jsonl"]
    assert failures[0].log == "results/logs/data/broken.log"
    assert failures[1].reason == "MissingOutputException"
    # reasons come from each job's own log: labeldist's ERROR line, else a traceback's last line
    (tmp_path / "results/logs/data").mkdir(parents=True)
    (tmp_path / "results/logs/data/broken.log").write_text(
        "2026 INFO labeldist: loading\nERROR: data/broken.jsonl, line 18: malformed JSON\n")
    (tmp_path / "results/logs/finetune/synthetic/tiny").mkdir(parents=True)
    (tmp_path / "results/logs/finetune/synthetic/tiny/sft.log").write_text(
        "step 1\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n"
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    log = tmp_path / "run.snakemake.log"
    log.write_text(SNAKEMAKE_LOG)
    got = summarise_failures(tmp_path, log)
    assert [f.reason for f in got] == ["data/broken.jsonl, line 18: malformed JSON", "MissingOutputException",
                                       "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]
    report = format_failures(got)
    assert report.startswith("3 failed job(s):") and "rule sft (job 9)" in report
    assert format_failures([]) == "No failed jobs.\n"
    assert reason_from_log(tmp_path / "missing.log") == ""


def test_failures_command_without_a_run(tmp_path, capsys):
    assert main(["--workdir", str(tmp_path), "--csv", str(tmp_path / "f.csv")]) == 0
    assert "No failed jobs." in capsys.readouterr().out
    assert (tmp_path / "f.csv").read_text().strip() == "rule,jobid,wildcards,log,reason,outputs"
    assert Failure("r").row()["outputs"] == ""


@pytest.mark.slow
def test_keep_going_builds_the_other_dataset_and_reports_the_failure(tmp_path, capsys):
    workdir = repo_copy(tmp_path / "repo")
    proc = start(workdir, "--keep-going", config=CONFIG)
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        proc.kill()
    assert rc != 0, "the broken dataset should make the run fail"
    out = log_tail(workdir, 100_000)
    assert "Error in rule prepare_data" in out
    results = workdir / "results"
    # the good dataset went all the way to its metrics
    built = ["data/synthetic/test.jsonl", "models/tiny/base/config.json",
             "generations/synthetic/tiny/base/baseline/main/seed0.jsonl",
             "estimates/synthetic/tiny/base/output.parquet",
             "metrics/synthetic/tiny/base.json"]
    missing = [p for p in built if not (results / p).exists()]
    assert not missing, f"not built despite --keep-going: {missing}\n{log_tail(workdir)}"
    # the broken dataset: no data file (nothing half-written), nothing downstream, no tables
    assert not (results / "data" / "broken").exists() or not any((results / "data" / "broken").iterdir())
    assert not (results / "generations" / "broken").exists()
    assert not (results / "tables").exists()
    # the report: one failure, the data job of `broken`, with the file and line at fault
    failures = summarise_failures(workdir)
    assert len(failures) == 1, format_failures(failures)
    f = failures[0]
    assert f.rule == "prepare_data" and all(p.startswith("results/data/broken/") for p in f.outputs)
    assert "broken.jsonl, line 18" in f.reason and f.log == "results/logs/data/broken.log"
    csv_path = results / "failures.csv"
    # the workflow's onerror handler wrote the report already
    assert "broken.jsonl, line 18" in csv_path.read_text()
    csv_path.unlink()
    assert main(["--workdir", str(workdir), "--csv", str(csv_path)]) == 1
    assert "1 failed job(s)" in capsys.readouterr().out
    assert "broken.jsonl, line 18" in csv_path.read_text()
    # the command-line entry point works from the run's folder, as a user calls it
    res = subprocess.run([sys.executable, "-m", "labeldist.failures"], cwd=workdir,
                         capture_output=True, text=True, env={"PYTHONPATH": str(workdir / "src")})
    assert res.returncode == 1 and "prepare_data" in res.stdout, res.stdout + res.stderr
