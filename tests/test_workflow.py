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


def expected_counts(cfg: dict) -> dict[str, int]:
    """Jobs per rule family of a validated config (docs/study_grid.md): generation per (dataset, model,
    regime, prompting mode), estimates with metrics and probes per (dataset, model, regime), Demux per
    dataset, the classification head per (dataset, model), every seed in one job; computed from the
    config here, not with the Snakefile's helpers."""
    from labeldist.config import model_prompting, model_runs

    runs, est = model_runs(cfg), cfg["estimators"]
    runs_with = lambda mode: sum(mode in model_prompting(cfg, m, r) for _, m, r in runs)  # noqa: E731
    base_pairs = {(d, m) for d, m, r in runs if r == "base"}
    return {
        "generate_baseline": runs_with("baseline"),
        "generate": runs_with("unary") + runs_with("pairwise"),
        "generate_icl_sweep": runs_with("icl_sweep"),
        "evaluate": len(runs),
        "evaluate_demux": len(cfg["datasets"]) * ("demux" in est),
        "linear_probe": runs_with("baseline") if "linear_probe" in est else 0,
        "demux": len(cfg["datasets"]) * ("demux" in est),
        "seq_cls_head": len(base_pairs) * ("seq_cls_head" in est),
        "sft": len({(d, m) for d, m, r in runs if r == "sft"}),
        "rl": len({(d, m) for d, m, r in runs if r == "rl"}),
    }


def family(counts: dict[str, int], rule: str) -> int:
    """Jobs of a rule and of its per-prompting-group copies (evaluate_<modes>[_<model>],
    labeldist.batched.evaluation_groups)."""
    return sum(n for r, n in counts.items()
               if r == rule or (rule == "evaluate" and r.startswith("evaluate_") and r != "evaluate_demux"))


def test_dry_run_plans_the_default_grid():
    """`snakemake -n` lists every job of the default grid; counts follow from config.yaml."""
    from labeldist.config import load_config

    res = snakemake("-n", "--forceall", "--quiet", "rules")
    assert res.returncode == 0, res.stderr[-3000:]
    counts = planned_jobs(res.stdout + res.stderr)
    cfg = load_config(REPO / "config.yaml", base_dir=REPO)
    assert counts["prepare_data"] == len(cfg["datasets"])
    assert counts["base_model"] == len(cfg["models"])
    for rule, n in expected_counts(cfg).items():
        assert family(counts, rule) == n, (rule, counts)
    assert counts["tables"] == 1 and counts["all"] == 1
    for fig in cfg["figures"]:
        assert counts[f"figure_{fig}"] == 1


def test_lint_is_clean():
    res = snakemake("--lint")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


def test_rule_files_are_snakefmt_formatted():
    """`snakefmt --check` (pinned in requirements.txt; line length in pyproject.toml) leaves every rule
    file unchanged."""
    snakefmt = Path(sys.executable).parent / "snakefmt"
    assert snakefmt.exists(), f"{snakefmt} missing: install requirements.txt (make install)"
    res = subprocess.run([str(snakefmt), "--check", "Snakefile", "workflow/rules"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
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


def test_keyed_parses_the_named_files_of_grouped_rules():
    """labeldist.batched.keyed: the one parser of the key__part__seed names the grouped rules give their
    files (seeds as int, one part as itself)."""
    from labeldist.batched import keyed

    named = {"gen__baseline__main__0": "a", "gen__unary__dev__12": "b", "est__first_step": "c", "labels": "d"}
    assert keyed(named, "gen__") == {("baseline", "main", 0): "a", ("unary", "dev", 12): "b"}
    assert keyed(named, "est__") == {"first_step": "c"}
    assert keyed({"model__3": "m"}, "model__") == {3: "m"}
