"""Resume after a kill, and reproducibility, on the reduced config (tests/fixtures/config_small.yaml).

In a scratch copy of the repository (the files git tracks or would track, `.venv` symlinked), with the
default profile (`profiles/default`: `rerun-incomplete: true`):
- a reference run from scratch to the end;
- a second run from scratch, killed three times at the moment a stage starts writing: training (the
  SFT job's temporary model folder appears; SIGTERM to the whole process group, as a scheduler's
  cancel does), generation (the first new generation file appears; SIGKILL to the process group,
  which is what `timeout -s KILL` does: it signals its own process group) and plotting (the first
  figure appears; SIGKILL). After each kill the run is resumed (`--unlock` first: a killed Snakemake
  leaves its lock). The resumed runs must complete, leave untouched every output that was complete at
  the kill (same mtime; "complete" = present at the kill and not marked incomplete by Snakemake), leave
  no temporary file behind, and end with tables equal to the reference's.
- Reproducibility: those two from-scratch runs have byte-identical tables; a run with another seed
  (on a copy of the reference run) redoes only seed-dependent jobs, and changes demo ids and results.
Float tolerance: none. Every stage is seeded and runs on CPU with a fixed thread count, so the tables
are compared byte for byte; a tolerance would hide a resume that silently mixed two different runs.

The whole file takes about 4-5 minutes on two free cores (measured; more on a loaded machine).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from labeldist.io import atomic_dir, atomic_path

from .conftest import REPO

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CONFIG = "tests/fixtures/config_small.yaml"
TABLES = ("alignment.csv", "classification.csv", "alignment.md", "classification.md")
RUN_TIMEOUT = 900


# ---- a scratch copy of the repository and Snakemake runs in it -----------------------------------
def repo_copy(dest: Path) -> Path:
    """Copy the repository's files (tracked, or untracked but not ignored) to `dest`; link .venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    dest.mkdir(parents=True)
    for rel in filter(None, listed):
        src = REPO / rel
        if rel.startswith(("results/", ".snakemake/")) or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    if (REPO / ".venv").exists():
        (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def run_env(workdir: Path) -> dict[str, str]:
    """The environment of a run: the copy's own `src` first on the path (also in job scripts), offline."""
    return {**os.environ, "PYTHONPATH": str(workdir / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def start(workdir: Path, *extra: str, config: str = CONFIG) -> subprocess.Popen:
    """Start Snakemake (default profile, reduced config) in its own process group; output to run.log."""
    log = open(workdir / "run.log", "a")
    log.write(f"\n=== {time.strftime('%X')} snakemake {' '.join(extra)}\n")
    log.flush()
    return subprocess.Popen([SNAKEMAKE, "--profile", "profiles/default", "--configfile", config, "--cores", "2",
                             *extra], cwd=workdir, env=run_env(workdir), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)


def log_tail(workdir: Path, n: int = 4000) -> str:
    return (workdir / "run.log").read_text(errors="replace")[-n:]


def run_to_end(workdir: Path, *extra: str, config: str = CONFIG) -> None:
    """Run Snakemake to completion; fail with the log's tail if it does not succeed."""
    proc = start(workdir, *extra, config=config)
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT)
    finally:
        _kill_group(proc, signal.SIGKILL)
    assert rc == 0, f"snakemake {' '.join(extra)} failed (rc {rc}):\n{log_tail(workdir)}"


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def _group_gone(pgid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


# ---- what the results folder holds ---------------------------------------------------------------
def outputs(workdir: Path) -> dict[str, int]:
    """{path relative to the workdir: mtime in ns} of every output file under results/ (logs,
    benchmarks, the failure report of an interrupted run and hidden temporaries left out)."""
    root = workdir / "results"
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] not in ("logs", "benchmarks", "failures.csv") and not any(
                p.startswith(".") for p in rel.parts):
            out[str(path.relative_to(workdir))] = path.stat().st_mtime_ns
    return out


def temporaries(workdir: Path) -> list[str]:
    """Hidden temporaries of labeldist.io's atomic writes anywhere under results/."""
    return sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob(".*") if p.name.endswith(".tmp")
                  or ".tmp" in p.suffixes)


def incomplete_markers(workdir: Path) -> set[str]:
    """Output paths Snakemake marked incomplete (job started, not finished): its
    .snakemake/incomplete/ holds one file per output, named by the urlsafe base64 of the path (long
    names split into '@'-prefixed folders)."""
    root = workdir / ".snakemake" / "incomplete"
    keys = set()
    for path in root.rglob("*") if root.exists() else []:
        if path.is_file() and path.name != "migration_underway":
            encoded = "".join(part.lstrip("@") for part in path.relative_to(root).parts)
            keys.add(base64.urlsafe_b64decode(encoded.encode()).decode())
    return keys


def _under(path: str, markers: set[str]) -> bool:
    return any(path == m or path.startswith(m.rstrip("/") + "/") for m in markers)


# ---- kill at a moment, resume ----------------------------------------------------------------------
def kill_when(workdir: Path, moment: Callable[[Path, set[str]], bool], sig: int, what: str) -> dict[str, int]:
    """Start a run, wait until `moment(workdir, outputs before the start)` holds, send `sig` to the
    run's whole process group, wait until every process of it is gone; return the outputs that were
    complete at the kill (present before and after it with the same mtime, not marked incomplete)."""
    before = set(outputs(workdir))
    proc = start(workdir)
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while not moment(workdir, before):
            assert proc.poll() is None, f"the run ended before {what}:\n{log_tail(workdir)}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.1)
        at_kill = outputs(workdir)
        _kill_group(proc, sig)
        if sig != signal.SIGKILL:  # Snakemake itself may outlive a SIGTERM; its jobs do not
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _kill_group(proc, signal.SIGKILL)
        proc.wait(timeout=60)
        assert _group_gone(proc.pid, 60), f"processes of the killed run survive ({what})"
    finally:
        _kill_group(proc, signal.SIGKILL)
    after = outputs(workdir)
    incomplete = incomplete_markers(workdir)
    complete = {p: m for p, m in at_kill.items() if after.get(p) == m and not _under(p, incomplete)}
    with open(workdir / "run.log", "a") as log:
        log.write(f"=== killed ({what}, signal {sig}): {len(complete)} complete outputs, incomplete: "
                  f"{sorted(incomplete)}, temporaries: {temporaries(workdir)}\n")
    return complete


def new_file(folder: str, pattern: str) -> Callable[[Path, set[str]], bool]:
    """A moment: a file matching `pattern` under results/`folder` that was not there at the start."""
    def moment(workdir: Path, before: set[str]) -> bool:
        return any(str(p.relative_to(workdir)) not in before for p in (workdir / "results" / folder).rglob(pattern))
    return moment


def sft_training_started(workdir: Path, before: set[str]) -> bool:
    """A moment: the SFT job's temporary model folder exists (it is created before training starts)."""
    return any((workdir / "results" / "models" / "synthetic" / "tiny").glob(".sft.*.tmp"))


def read_tables(workdir: Path) -> dict[str, bytes]:
    return {name: (workdir / "results" / "tables" / name).read_bytes() for name in TABLES}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """A copy of the repository with the reduced config run from scratch to the end."""
    workdir = repo_copy(tmp_path_factory.mktemp("reference") / "repo")
    run_to_end(workdir)
    return workdir


# ---- tests ---------------------------------------------------------------------------------------
def test_killed_write_leftovers_are_removed_on_retry(tmp_path):
    """What makes a resume clean on disk: a killed atomic write leaves a hidden temporary (here made by
    hand, as a SIGKILL would leave it); the next write of the same target deletes it, and only it."""
    target = tmp_path / "seed0.jsonl"
    stale_file = tmp_path / ".seed0.jsonl.ab12cd34.jsonl.tmp"
    other = tmp_path / ".seed0.jsonl.hidden.ab12cd34.tmp"  # not a temporary of this target
    stale_dir = tmp_path / ".sft.k3j4h5g6.tmp"
    for p in (stale_file, other):
        p.write_text("partial")
    (stale_dir / "sub").mkdir(parents=True)
    with atomic_path(target) as tmp:
        tmp.write_text("done\n")
    with atomic_dir(tmp_path / "sft") as tmp:
        (tmp / "config.json").write_text("{}")
    assert target.read_text() == "done\n" and (tmp_path / "sft" / "config.json").exists()
    assert not stale_file.exists() and not stale_dir.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".seed0.jsonl.hidden.ab12cd34.tmp", "seed0.jsonl",
                                                                 "sft"])


def test_small_config_is_valid():
    from labeldist.config import load_config

    cfg = load_config(REPO / CONFIG, base_dir=REPO)
    assert cfg["seeds"] == [0] and "sft" in cfg["regimes"] and cfg["figures"]


@pytest.mark.slow
def test_resume_after_kills_redoes_only_incomplete_work(reference, tmp_path):
    workdir = repo_copy(tmp_path / "repo")
    started = time.perf_counter()
    kills = [
        ("training", sft_training_started, signal.SIGTERM),
        ("generation", new_file("generations", "*.jsonl"), signal.SIGKILL),
        ("plotting", new_file("figures", "*.p*"), signal.SIGKILL),
    ]
    preserved: dict[str, int] = {}
    for i, (what, moment, sig) in enumerate(kills):
        complete = kill_when(workdir, moment, sig, what)
        assert complete, f"nothing was complete at the {what} kill"
        for path, mtime in preserved.items():  # earlier resumes kept them
            assert outputs(workdir).get(path) == mtime, f"{path} was redone after the {what} kill"
        preserved.update(complete)
        if i == 1:  # a SIGKILLed Snakemake leaves its lock: say so, and --unlock lifts it
            proc = start(workdir)
            assert proc.wait(timeout=RUN_TIMEOUT) != 0 and "--unlock" in log_tail(workdir, 3000), log_tail(workdir)
        run_to_end(workdir, "--unlock")
    run_to_end(workdir)
    assert not (workdir / "results" / "failures.csv").exists(), "a successful run keeps no failure report"
    final = outputs(workdir)
    redone = sorted(p for p, m in preserved.items() if final.get(p) != m)
    assert not redone, f"outputs complete at a kill were redone: {redone}"
    assert not temporaries(workdir), temporaries(workdir)
    assert set(final) == set(outputs(reference)), set(final) ^ set(outputs(reference))
    assert read_tables(workdir) == read_tables(reference), "tables differ from the uninterrupted run"
    print(f"killed and resumed run: {time.perf_counter() - started:.0f} s")


@pytest.mark.slow
def test_another_seed_changes_demos_and_results_only(reference, tmp_path):
    workdir = tmp_path / "repo"
    shutil.copytree(reference, workdir, symlinks=True)
    before = outputs(workdir)
    # Only the seeds change: yaml.safe_dump would also sort the keys, and Snakemake compares dict params
    # with their key order, so a reordered config block reruns its rule (and everything downstream).
    text = (workdir / CONFIG).read_text()
    assert text.count("seeds: [0]\n") == 1
    (workdir / "seed1.yaml").write_text(text.replace("seeds: [0]\n", "seeds: [1]\n"))
    run_to_end(workdir, config="seed1.yaml")
    after = outputs(workdir)
    # seed-independent outputs (data, base model, SFT model) are not redone
    for path, mtime in before.items():
        if path.startswith(("results/data/", "results/models/")):
            assert after[path] == mtime, f"{path} was redone for another seed"
    # demos differ: the same examples, other demonstrations
    gen = Path("results/generations/synthetic/tiny/base/baseline/main")
    demos = {}
    for seed in (0, 1):
        lines = (workdir / gen / f"seed{seed}.jsonl").read_text().splitlines()
        demos[seed] = {rec["id"]: rec["demo_ids"] for rec in map(json.loads, lines)}
    assert demos[0].keys() == demos[1].keys()
    assert sum(demos[0][i] != demos[1][i] for i in demos[0]) >= len(demos[0]) // 2, demos
    # results differ: the tables (aggregated over seeds [1]) are not the reference's
    tables = read_tables(workdir)
    assert tables["alignment.csv"] != read_tables(reference)["alignment.csv"]
    assert tables["classification.csv"] != read_tables(reference)["classification.csv"]
