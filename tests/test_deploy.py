"""Using the workflow the Snakemake way, offline: deployed with snakedeploy from a clone, and as a module
of another Snakefile. Both must plan the default grid with `snakemake -n` (README, "Deploying the
workflow elsewhere")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import REPO
from .test_workflow import expected_counts, family, planned_jobs, snakemake

SNAKEDEPLOY = shutil.which("snakedeploy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def clone(dest: Path) -> Path:
    """A clone of the working tree: its tracked and not-ignored files (uncommitted edits included,
    results/ and .venv left out), symlinks kept as links."""
    if not (REPO / ".git").exists():
        pytest.skip(f"{REPO} is not a git checkout: nothing to clone")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_symlink() or src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


def assert_plans_the_default_grid(counts: dict[str, int], prefix: str = "") -> None:
    """The jobs of config.yaml's grid, rule by rule as test_workflow counts them, each rule under `prefix`."""
    from labeldist.config import load_config

    counts = {name: n for name, n in counts.items() if name != "total"}
    assert counts and all(name.startswith(prefix) for name in counts), counts
    counts = {name[len(prefix):]: n for name, n in counts.items()}
    cfg = load_config(REPO / "config.yaml", base_dir=REPO)
    assert counts["prepare_data"] == len(cfg["datasets"]) and counts["base_model"] == len(cfg["models"]), counts
    for rule, n in expected_counts(cfg).items():
        assert family(counts, rule) == n, (rule, counts)
    assert counts["tables"] == 1 and counts["all"] == 1, counts


def test_config_folder_holds_the_embedded_default():
    """snakedeploy copies config/ and reads config/config.yaml: it is the default, config.yaml itself
    (a link, so the two cannot drift apart)."""
    assert (REPO / "config" / "config.yaml").read_bytes() == (REPO / "config.yaml").read_bytes()


def test_snakedeploy_deployment_of_a_clone_plans_the_default(tmp_path):
    if SNAKEDEPLOY is None:
        pytest.skip("snakedeploy is not installed (requirements.txt pins it; `make install` installs it)")
    source = clone(tmp_path / "labeldist")
    res = subprocess.run([SNAKEDEPLOY, "deploy-workflow", str(source), "deployed", "--branch", "main"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    dest = tmp_path / "deployed"
    assert (dest / "config" / "config.yaml").read_bytes() == (REPO / "config.yaml").read_bytes()
    assert not (dest / "config" / "config.yaml").is_symlink()
    assert (dest / "profiles" / "default" / "config.yaml").is_file()
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert 'configfile: "config/config.yaml"' in text and "use rule * from labeldist" in text
    # For a local source snakedeploy 0.17.1 writes the module's snakefile as the path inside the
    # source, "Snakefile", which Snakemake reads relative to workflow/ (the deployed Snakefile itself);
    # a github(...) source names the repository instead. Point it at the clone, as that one would.
    text, n = re.subn(r'snakefile:\s*\n\s*"Snakefile"', f'snakefile:\n        "{source / "Snakefile"}"', text)
    assert n == 1, text
    snakefile.write_text(text)
    res = snakemake("-n", "--quiet", "rules", cwd=dest)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert_plans_the_default_grid(planned_jobs(res.stdout + res.stderr))


def test_the_workflow_as_a_module_plans_the_default(tmp_path):
    """`module labeldist: snakefile: <clone>/Snakefile` + `use rule * from labeldist as labeldist_*`,
    with the clone's default config copied beside it: every job planned, under the module's prefix."""
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config.yaml", tmp_path / "config" / "config.yaml")
    (tmp_path / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n\n'
        f'module labeldist:\n    snakefile:\n        "{REPO / "Snakefile"}"\n    config:\n        config\n\n\n'
        "use rule * from labeldist as labeldist_*\n")
    res = snakemake("-n", "--quiet", "rules", cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert_plans_the_default_grid(planned_jobs(res.stdout + res.stderr), prefix="labeldist_")
