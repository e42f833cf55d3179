"""The workflow on SLURM: the sbatch calls the SLURM plugin builds for our rules, and a real run on a
localhost SLURM cluster (installed and started by the test, marked `slurm`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO
from .slurm_cluster import LocalSlurm, SlurmUnavailable, ensure_installed

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PROFILE = REPO / "profiles" / "slurm"
GPUS = re.compile(r"--gpus=(\S+)")
# Outputs of jobs that load an LLM or train an encoder: generations, SFT/RL models, and the estimates
# of the classification head and of Demux (docs/formats.md).
LLM_OUTPUT = re.compile(r"/generations/|/models/[^/]+/[^/]+/(sft|rl)$|/estimates/[^/]+/[^/]+/[^/]+/(seq_cls_head|demux)\.parquet$")


def plan_jobs(configfile: Path | None, attempts: tuple[int, ...] = (1,)) -> list[dict]:
    """The planned jobs with their sbatch calls per attempt (tests/slurm_cluster.py, in a subprocess)."""
    cmd = [sys.executable, "-m", "tests.slurm_cluster", "jobs", "--attempts", *map(str, attempts)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-4000:]
    return json.loads(res.stdout.split("@@JOBS@@", 1)[1])


def llm_job(job: dict) -> bool:
    """Whether a job loads an LLM or trains an encoder, judged from its outputs (docs/formats.md)."""
    return any(LLM_OUTPUT.search(f) for f in job["output"])


@pytest.fixture(scope="module")
def small_study(tmp_path_factory) -> Path:
    """config/study.yaml cut to one dataset, a small and a 4-bit 70B model, one seed (planning reads no
    data: no dataset needs to be present)."""
    cfg = yaml.safe_load((REPO / "config" / "study.yaml").read_text())
    cfg["datasets"] = {"goemotions": cfg["datasets"]["goemotions"]}
    cfg["models"] = {k: cfg["models"][k] for k in ("llama32_1b", "llama31_70b")}
    cfg["seeds"] = [0]
    path = tmp_path_factory.mktemp("study") / "small_study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def small_study_jobs(small_study) -> list[dict]:
    return plan_jobs(small_study, attempts=(1, 2))


def test_gpu_rules_ask_slurm_for_gpus_and_cpu_rules_do_not(small_study_jobs):
    jobs = small_study_jobs
    remote = [j for j in jobs if not j["local"]]
    assert remote, "no job to submit"
    gpu_rules = set()
    for job in remote:
        asked = GPUS.search(job["sbatch"])
        assert f"--mem {job['resources']['mem_mb']}" in job["sbatch"], job
        assert f"-t {job['resources']['runtime']}" in job["sbatch"], job
        assert f"--cpus-per-task={job['threads']}" in job["sbatch"], job
        if llm_job(job):
            gpu_rules.add(job["rule"])
            assert asked and int(asked.group(1)) >= 1, f"{job['rule']} {job['output']}: {job['sbatch']}"
            assert job["partition"] == "gpu", job
        else:
            assert asked is None, f"{job['rule']} {job['output']} asks for a GPU: {job['sbatch']}"
            assert job["partition"] == "cpu", job
    # generation (baseline and the other modes), SFT, RL, the classification head and Demux
    assert len(gpu_rules) >= 5, gpu_rules


def test_retries_ask_for_more_memory_and_time(small_study_jobs):
    llm_jobs = [j for j in small_study_jobs if llm_job(j)]
    assert llm_jobs
    for job in llm_jobs:
        first, second = (a["resources"] for a in job["attempts"])
        assert second["mem_mb"] > first["mem_mb"], job["rule"]
        assert second["runtime"] > first["runtime"], job["rule"]
        assert f"--mem {second['mem_mb']}" in job["attempts"][1]["sbatch"], job["rule"]


def test_default_config_submits_no_gpu_job():
    jobs = plan_jobs(None)
    assert jobs
    for job in jobs:
        assert GPUS.search(job["sbatch"]) is None, f"{job['rule']} asks for a GPU with the CPU-only tiny model"


def test_profile_holds_only_known_options():
    """Every key of the profile is an option `snakemake --help` lists (core or SLURM plugin)."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    help_text = subprocess.run([SNAKEMAKE, "--help"], capture_output=True, text=True, timeout=120).stdout
    for key in profile:
        assert f"--{key}" in help_text, f"profiles/slurm/config.yaml: unknown option {key!r}"
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"  # sacct hangs without slurmdbd (STACK.md)
    assert profile["retries"] >= 1


# ---- a real SLURM cluster ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        ensure_installed()
        slurm = LocalSlurm(tmp_path_factory.mktemp("slurm"))
        slurm.start()
    except SlurmUnavailable as err:
        pytest.skip(f"no local SLURM cluster: {err}")
    try:
        yield slurm
    finally:
        slurm.stop()


def repo_copy(dest: Path) -> Path:
    """A copy of the workflow (no results, venv or git) so the SLURM run cannot touch results/."""
    ignore = shutil.ignore_patterns(".git", ".venv", "results", ".snakemake", "__pycache__", ".pytest_cache",
                                    "*.egg-info")
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


def reduced_config(path: Path) -> Path:
    """The embedded default cut to a handful of SLURM jobs; the tiny model claims a GPU (the cluster
    has a fake one) so that generation goes through the GPU partition."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    ds = cfg["datasets"]["synthetic"]
    ds["synthetic"].update(n_train=200, n_dev=40, n_test=40)
    ds["subsets"] = {"main_size": 16, "multi_size": 8, "dev_size": 8, "train_size": 16, "seed": 0}
    tiny = cfg["models"]["tiny"]
    # 512 positions: with a 300-token vocabulary the k = 2 prompts are ~250 tokens, which 256 positions minus
    # max_new_tokens cannot hold (the generation stage refuses such prompts: labeldist.context)
    tiny["builtin"].update(steps=10, batch_size=4, vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                           num_kv_heads=1, intermediate_size=64, max_position_embeddings=512)
    tiny["gpu_mem_gb"] = 1
    cfg["prompts"]["emotions"]["k"] = 2
    # only the tiny model on the synthetic data: the real models of the default need their own prompts
    cfg["models"] = {"tiny": tiny}
    cfg["datasets"] = {"synthetic": ds}
    cfg.update(seeds=[0], regimes=["base"], prompting=["baseline"], estimators=["first_step", "max_over_steps"],
               figures=[], device="auto")
    cfg["generation"].update(max_new_tokens=12, batch_size=8, marginal=False)
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slurm
def test_workflow_runs_through_sbatch(cluster, tmp_path):
    work = repo_copy(tmp_path / "repo")
    config = reduced_config(tmp_path / "slurm_test.yaml")
    estimates = [f"results/estimates/synthetic/tiny/base/{est}.parquet" for est in ("first_step", "max_over_steps")]
    env = {**cluster.env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [SNAKEMAKE, "--profile", str(work / "profiles" / "slurm"), "--configfile", str(config),
           "--slurm-partition-config", str(work / "profiles" / "slurm" / "partitions.yaml"),
           "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--jobs", "2",
           "--retries", "0", *estimates]
    try:
        res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"SLURM run timed out\n{(err.stderr or b'')[-3000:]!r}\n{cluster.logs()}")
    log = res.stdout + res.stderr
    job_logs = "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted((work / ".snakemake" / "slurm_logs").rglob("*.log")))
    assert res.returncode == 0, log[-4000:] + "\n" + job_logs + "\n" + cluster.logs()

    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)
    assert len(submitted) >= 4, log[-3000:]  # data, base model, generation, evaluate
    by_rule = {}
    for _, jobid in submitted:
        info = cluster.job(jobid)
        assert info.get("JobState") == "COMPLETED", info
        rule = re.match(r"rule_([A-Za-z0-9_]+?)(_wildcards_|$)", info.get("Comment", ""))
        assert rule, info
        by_rule.setdefault(rule.group(1), []).append(info)
    assert {"prepare_data", "base_model", "evaluate"} <= set(by_rule), sorted(by_rule)
    for rule, infos in by_rule.items():
        for info in infos:
            gpu = "gres:gpu" in info.get("TresPerJob", "")
            generation = rule.startswith("generate")
            assert gpu == generation, f"{rule}: TresPerJob={info.get('TresPerJob')!r}"
            assert info["Partition"] == ("gpu" if generation else "cpu"), (rule, info["Partition"])

    import pandas as pd

    for est in estimates:
        q = pd.read_parquet(work / est)["q"]
        assert len(q) > 0 and q.between(0, 1).all()


@pytest.mark.slurm
def test_gres_only_cluster_gets_gres(cluster, tmp_path):
    """--config gpu_resource=gres: the generation job reaches SLURM with --gres=gpu:1 (no --gpus) and
    runs on the GPU partition; CPU jobs ask for no GRES."""
    work = repo_copy(tmp_path / "repo")
    config = reduced_config(tmp_path / "slurm_gres.yaml")
    target = "results/generations/synthetic/tiny/base/baseline/main/seed0.jsonl"
    env = {**cluster.env, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [SNAKEMAKE, "--profile", str(work / "profiles" / "slurm"), "--configfile", str(config),
           "--config", "gpu_resource=gres",
           "--slurm-partition-config", str(work / "profiles" / "slurm" / "partitions.yaml"),
           "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5", "--jobs", "2",
           "--retries", "0", target]
    try:
        res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=420)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"SLURM run timed out\n{(err.stderr or b'')[-3000:]!r}\n{cluster.logs()}")
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:] + "\n" + cluster.logs()
    assert "--gpus" not in log, log[-3000:]
    gen_seen = False
    for _, jobid in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log):
        info = cluster.job(jobid)
        assert info.get("JobState") == "COMPLETED", info
        generation = info.get("Comment", "").startswith("rule_generate")
        gen_seen |= generation
        # --gres is a per-node request (TresPerNode); --gpus would be per job (TresPerJob)
        assert ("gres:gpu" in info.get("TresPerNode", "")) == generation, info
        assert "gpu" not in info.get("TresPerJob", ""), info
        assert info["Partition"] == ("gpu" if generation else "cpu"), info
    assert gen_seen, log[-3000:]
    assert (work / target).is_file()
