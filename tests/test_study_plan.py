"""`snakemake -n --configfile config/study.yaml` plans the whole study grid on a fresh copy of the
repository with no ../shared beside it, no data and no network: the plan holds at most MAX_JOBS jobs
(a cluster-friendly DAG, docs/study_grid.md), the planned outputs match the grid's arithmetic (computed
here from the config, not with the Snakefile's helpers), and every job that loads an LLM asks for a GPU
while every other job does not (with --config gpu_resource=gres: a GRES string instead, never both).
One dry run, parsed (every job it prints with its outputs and resources); tests/test_slurm.py checks the
sbatch calls."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from .conftest import REPO
from .test_slurm import llm_job

MAX_JOBS = 2500
"""The study grid's plan must stay under this many jobs (issue 14: schedulers cap a user's jobs)."""
SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STUDY = REPO / "config" / "study.yaml"
NO_GENERATION = {"demux", "seq_cls_head"}  # estimators that read no generation file


@pytest.fixture(scope="module")
def study() -> dict:
    return yaml.safe_load(STUDY.read_text())


def fresh_copy(dest: Path) -> Path:
    """The repository's files as a clone has them (tracked and not ignored), without ../shared beside
    it, results, .snakemake or the venv."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    assert not (dest.parent / "shared").exists()
    return dest


def plan(workdir: Path, *extra: str) -> tuple[str, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.monotonic()
    res = subprocess.run([SNAKEMAKE, "-n", "--configfile", "config/study.yaml", *extra], cwd=workdir, env=env,
                         capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return res.stdout + res.stderr, took


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    return fresh_copy(tmp_path_factory.mktemp("fresh") / "labeldist")


@pytest.fixture(scope="module")
def dry_run(clone) -> tuple[str, float]:
    """The dry run's output (the plan, every job) and its wall time, with the hub switched off."""
    return plan(clone)


@pytest.fixture(scope="module")
def jobs(dry_run) -> list[dict]:
    return parse_jobs(dry_run[0])


def parse_jobs(output: str) -> list[dict]:
    """The jobs a dry run prints: rule, local or not, outputs, and resources (name -> str)."""
    jobs, job = [], None
    for line in output.splitlines():
        if m := re.match(r"^(local)?rule (\w+):$", line):
            job = {"rule": m.group(2), "local": bool(m.group(1)), "output": [], "resources": {}}
            jobs.append(job)
        elif job is not None and (m := re.match(r"^    (output|resources): (.*)$", line)):
            items = [x.strip() for x in m.group(2).split(", ")]
            if m.group(1) == "output":
                job["output"] = items
            else:
                job["resources"] = dict(x.split("=", 1) for x in items if "=" in x)
        elif not line.startswith("    "):
            job = None
    return jobs


def job_stats(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
        elif in_table and line.strip().startswith("total"):
            break
        elif in_table and (m := re.match(r"^(\w+)\s+(\d+)$", line.strip())):
            counts[m.group(1)] = int(m.group(2))
    return counts


def generation_subsets(prompting: str, estimators: list[str]) -> list[str]:
    """docs/formats.md: baseline on main, dev, multi (+ train for probes); unary/pairwise on main and
    dev; the ICL sweep on main."""
    return {"baseline": ["main", "dev", "multi"] + (["train"] if "linear_probe" in estimators else []),
            "unary": ["main", "dev"], "pairwise": ["main", "dev"], "icl_sweep": ["main"]}[prompting]


def expected_estimate_runs(cfg: dict) -> set[tuple[str, str, str, str]]:
    """(dataset, model, regime, estimator) of every estimate: Demux once per dataset (model `encoder`,
    regime base), the classification head on base models, every other estimator on every model x regime."""
    runs = set()
    for d in cfg["datasets"]:
        for est in cfg["estimators"]:
            if est == "demux":
                runs.add((d, "encoder", "base", est))
                continue
            for m in cfg["models"]:
                for r in cfg["regimes"]:
                    if est != "seq_cls_head" or r == "base":
                        runs.add((d, m, r, est))
    return runs


def planned_files(jobs: list[dict], results: str, pattern: str) -> list[re.Match]:
    rx = re.compile(re.escape(results) + "/" + pattern + "$")
    return [m for j in jobs for f in j["output"] if (m := rx.match(f))]


def test_fresh_clone_plans_the_grid_without_data_in_few_jobs(dry_run, jobs, study):
    output, took = dry_run
    stats = job_stats(output)
    assert stats, output[-3000:]
    assert sum(stats.values()) == len(jobs)
    assert len(jobs) <= MAX_JOBS, f"{len(jobs)} jobs planned: {stats}"
    d, m = len(study["datasets"]), len(study["models"])
    assert stats["prepare_data"] == d
    assert stats["base_model"] == m
    # docs/study_grid.md quotes a median of 4 s on the 2-core machine; a loaded CI runner may take a few times that
    assert took < 60, f"planning took {took:.0f} s"


def test_generation_files_follow_the_grid(jobs, study):
    res = study["results"]
    found = Counter(
        mt.group(4) for mt in planned_files(jobs, res, r"generations/([^/]+)/([^/]+)/([^/]+)/([^/]+)/([^/]+)/seed\d+\.jsonl")
    )
    base = len(study["datasets"]) * len(study["models"]) * len(study["regimes"]) * len(study["seeds"])
    expected = {p: base * len(generation_subsets(p, study["estimators"])) for p in study["prompting"]}
    assert dict(found) == expected
    # one generation job per dataset x model x regime x prompting mode, writing all its subsets and seeds
    gen_jobs = [j for j in jobs if any("/generations/" in f and f.endswith(".jsonl") for f in j["output"])]
    assert len(gen_jobs) == base // len(study["seeds"]) * len(study["prompting"])
    for job in gen_jobs:
        run = {tuple(f.split("/generations/")[1].split("/")[:4]) for f in job["output"]}
        assert len(run) == 1, job["output"]
        mode = next(iter(run))[3]
        seeds = {re.search(r"seed(\d+)\.", f).group(1) for f in job["output"]}
        assert seeds == {str(s) for s in study["seeds"]}, job["output"]
        assert sum(f.endswith(".jsonl") for f in job["output"]) == len(study["seeds"]) * len(
            generation_subsets(mode, study["estimators"]))
    # hidden states for every baseline generation (probes)
    hidden = planned_files(jobs, res, r"generations/.+/baseline/[^/]+/seed\d+\.hidden\.safetensors")
    assert len(hidden) == expected["baseline"]


def test_finetuned_models_follow_the_grid(jobs, study):
    res = study["results"]
    for regime in ("sft", "rl"):
        found = planned_files(jobs, res, rf"models/([^/]+)/([^/]+)/{regime}")
        want = len(study["datasets"]) * len(study["models"]) if regime in study["regimes"] else 0
        assert len(found) == want, regime
    assert len(planned_files(jobs, res, r"models/([^/]+)/base")) == len(study["models"])


def test_estimates_and_metrics_follow_the_grid(jobs, study):
    res = study["results"]
    runs = expected_estimate_runs(study)
    # one estimate file per estimator of a run, every seed and subset in it
    found = {mt.groups() for mt in planned_files(jobs, res, r"estimates/([^/]+)/([^/]+)/([^/]+)/([^/.]+)\.parquet")}
    assert found == runs, (sorted(runs - found)[:5], sorted(found - runs)[:5])
    # one metrics file per (dataset, model, regime), every estimator and seed in it, written by the job
    # that writes the run's estimates (Demux: one per dataset)
    metrics = {mt.groups() for mt in planned_files(jobs, res, r"metrics/([^/]+)/([^/]+)/([^/]+)\.json")}
    assert metrics == {run[:3] for run in runs}
    for job in jobs:
        if any("/metrics/" in f for f in job["output"]):
            assert len([f for f in job["output"] if "/metrics/" in f]) == 1, job["output"]


def test_every_figure_is_planned(jobs, study):
    res = study["results"]
    for fig in study["figures"]:
        assert planned_files(jobs, res, rf"figures/{fig}\.png"), fig


def test_llm_jobs_ask_for_a_gpu_and_no_other_job_does(jobs):
    llm_rules, cpu_rules = set(), set()
    for job in jobs:
        if job["local"] or not job["output"]:  # `rule all` only collects targets
            continue
        gpu = int(job["resources"].get("gpu", 0))
        assert "mem_mb" in job["resources"] and "runtime" in job["resources"], job["rule"]
        if llm_job(job):
            llm_rules.add(job["rule"])
            assert gpu >= 1, (job["rule"], job["output"][:1])
        else:
            cpu_rules.add(job["rule"])
            assert gpu == 0, (job["rule"], job["output"][:1])
    # generation (all prompting modes), SFT, RL, the classification head and Demux
    assert len(llm_rules) >= 5 and cpu_rules and not llm_rules & cpu_rules, (llm_rules, cpu_rules)


def test_gres_switch_asks_for_gres_instead_of_gpus(clone, study):
    """--config gpu_resource=gres: jobs that need GPUs ask for gres=gpu:N and none asks for `gpu`."""
    output, _ = plan(clone, "--config", "gpu_resource=gres", "--until", "generate_baseline", "demux")
    jobs = [j for j in parse_jobs(output) if j["output"] and not j["local"]]
    gen = [j for j in jobs if j["rule"] == "generate_baseline"]
    assert gen
    for job in jobs:  # never both (the SLURM plugin refuses a job with both)
        assert not (int(job["resources"].get("gpu", 0)) and job["resources"].get("gres")), job
        if job["rule"].startswith("generate") or job["rule"] == "demux":
            assert "gpu" not in job["resources"], (job["rule"], job["resources"])
    for job in gen:
        assert re.fullmatch(r"gpu:[1-9]\d*", job["resources"].get("gres", "")), job["resources"]
