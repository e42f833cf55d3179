"""The workflow as a user drives it: `snakemake -n` plans, `--lint` is clean, bad configs stop early."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from .conftest import REPO

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([SNAKEMAKE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def planned_jobs(output: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    counts = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("job") and "count" in line:
            in_table = True
            continue
        if in_table:
            m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
            if m:
                counts[m.group(1)] = int(m.group(2))
            elif line.strip().startswith("total"):
                break
    return counts


def test_dry_run_plans_the_default_grid():
    """`snakemake -n` lists every job of the default grid; counts follow from config.yaml."""
    res = snakemake("-n", "--forceall", "--quiet", "rules")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = planned_jobs(res.stdout + res.stderr)
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    n_d, n_m, n_s = len(cfg["datasets"]), len(cfg["models"]), len(cfg["seeds"])
    n_r = len(cfg["regimes"])
    assert counts["prepare_data"] == n_d
    assert counts["base_model"] == n_m
    assert counts["sft"] == counts["rl"] == n_d * n_m
    # baseline on main, dev, multi and (for probes) train; one job per regime and seed
    assert counts["generate_baseline"] == n_d * n_m * n_r * n_s * 4
    # icl_sweep on main; unary and pairwise on main and dev
    assert counts["generate"] == n_d * n_m * n_r * n_s * (1 + 2 + 2)
    assert counts["demux"] == n_d * n_s
    assert counts["seq_cls_head"] == n_d * n_m * n_s
    assert counts["linear_probe"] == n_d * n_m * n_r * n_s
    n_llm_est = len(cfg["estimators"]) - 2  # all but demux and seq_cls_head run per regime
    assert counts["metrics"] == n_d * n_s * (n_m * n_r * n_llm_est + n_m + 1)
    assert counts["tables"] == 1 and counts["all"] == 1
    for fig in cfg["figures"]:
        assert counts[f"figure_{fig}"] == 1


def test_lint_is_clean():
    res = snakemake("--lint")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_bad_config_stops_before_any_job(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["datasets"]["synthetic"]["synthetic"]["n_trian"] = 10
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    res = snakemake("-n", "--configfile", str(bad))
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "datasets.synthetic.synthetic: unknown key" in out
    assert "n_trian" in out
    assert "bad.yaml" in out
