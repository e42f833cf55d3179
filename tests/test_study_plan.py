"""`snakemake -n --configfile config/study.yaml` plans the whole study grid, offline: the planned
outputs match the grid's arithmetic (computed here from the config, not with the Snakefile's helpers),
and every job that loads an LLM asks for a GPU while every other job does not. One dry run, parsed
(every job it prints with its outputs and resources); tests/test_slurm.py checks the sbatch calls."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, needs_shared_data
from .test_slurm import llm_job

pytestmark = needs_shared_data

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
STUDY = REPO / "config" / "study.yaml"
NO_GENERATION = {"demux", "seq_cls_head"}  # estimators that read no generation file


@pytest.fixture(scope="module")
def study() -> dict:
    return yaml.safe_load(STUDY.read_text())


@pytest.fixture(scope="module")
def dry_run() -> tuple[str, float]:
    """The dry run's output (the plan, every job) and its wall time, with the hub switched off."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.monotonic()
    res = subprocess.run([SNAKEMAKE, "-n", "--configfile", str(STUDY)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    return res.stdout + res.stderr, took


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


def test_dry_run_plans_the_grid_offline_in_seconds(dry_run, jobs, study):
    output, took = dry_run
    stats = job_stats(output)
    assert stats, output[-3000:]
    assert sum(stats.values()) == len(jobs)
    d, m = len(study["datasets"]), len(study["models"])
    assert stats["prepare_data"] == d
    assert stats["base_model"] == m
    assert took < 180, f"planning took {took:.0f} s"


def test_generation_files_follow_the_grid(jobs, study):
    res = study["results"]
    found = Counter(
        mt.group(4) for mt in planned_files(jobs, res, r"generations/([^/]+)/([^/]+)/([^/]+)/([^/]+)/([^/]+)/seed\d+\.jsonl")
    )
    base = len(study["datasets"]) * len(study["models"]) * len(study["regimes"]) * len(study["seeds"])
    expected = {p: base * len(generation_subsets(p, study["estimators"])) for p in study["prompting"]}
    assert dict(found) == expected
    # one generation per job
    gen_jobs = [j for j in jobs if any("/generations/" in f and f.endswith(".jsonl") for f in j["output"])]
    assert len(gen_jobs) == sum(expected.values())
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
    res, seeds = study["results"], study["seeds"]
    runs = expected_estimate_runs(study)
    found = {(mt.group(1), mt.group(2), mt.group(3), mt.group(4), mt.group(5), int(mt.group(6)))
             for mt in planned_files(jobs, res, r"estimates/([^/]+)/([^/]+)/([^/]+)/([^/]+)/([^/]+)/seed(\d+)\.parquet")}
    want = {(*run, subset, seed) for run in runs for subset in ("main", "dev") for seed in seeds}
    assert found == want, (sorted(want - found)[:5], sorted(found - want)[:5])
    metrics = {(mt.group(1), mt.group(2), mt.group(3), mt.group(4), int(mt.group(5)))
               for mt in planned_files(jobs, res, r"metrics/([^/]+)/([^/]+)/([^/]+)/([^/]+)/seed(\d+)\.json")}
    assert metrics == {(*run, seed) for run in runs for seed in seeds}


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
