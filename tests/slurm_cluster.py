"""SLURM for the tests: a real single-node cluster on localhost, and the plugin's sbatch calls per job.

`ensure_installed()` installs the Debian packages when missing (root + apt). `LocalSlurm` writes
slurm.conf/gres.conf into a temp folder and to /etc/slurm (refusing to replace a configuration it did
not write), starts munged, slurmctld and `slurmd -N localhost` with a fake GPU (a gres backed by
/dev/null) and two partitions, `cpu` (default) and `gpu`, matching profiles/slurm/partitions.yaml, and
stops every daemon it started by its pid file. The recipe and its traps are in STACK.md ("A real SLURM
on localhost"). Clients also get SLURM_CONF in `env`.

`planned_jobs()` (also `python -m tests.slurm_cluster jobs ...`, JSON on stdout) builds the workflow's
DAG with the Snakemake API and, for every job, returns its evaluated resources and the sbatch command
line that snakemake-executor-plugin-slurm itself builds for it (`get_submit_command`,
`set_gres_string`, partition choice from profiles/slurm/partitions.yaml): no cluster needed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGES = ["slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "munged"]
MUNGE_RUN = Path("/run/munge")
MUNGE_PID = MUNGE_RUN / "munged.pid"
MUNGE_KEY = Path("/etc/munge/munge.key")
# The jobs' own `srun` (snakemake-executor-plugin-slurm-jobstep) drops every SLURM_* variable but the
# job's identity, SLURM_CONF included, so the configuration must also sit at the default path.
SYSTEM_CONF_DIR = Path("/etc/slurm")
MARKER = "# written by labeldist tests/slurm_cluster.py"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started here (not root, no apt, daemons do not come up)."""


def _which_all(names: list[str]) -> list[str]:
    """Return the names of `names` that are not on PATH (sbin included)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [n for n in names if shutil.which(n, path=path) is None]


def ensure_installed(timeout: int = 120) -> None:
    """Make sure the SLURM and munge binaries exist, installing Debian's packages if needed.

    Returns None; raises SlurmUnavailable (with the reason) when they are missing and cannot be
    installed: not root, no apt-get, or apt failing (e.g. no network to the package mirror).
    """
    if not _which_all(BINARIES):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable(f"SLURM is not installed ({', '.join(_which_all(BINARIES))} missing) "
                               "and installing it needs root")
    if shutil.which("apt-get") is None:
        raise SlurmUnavailable("SLURM is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    quick = ["-o", "Acquire::Retries=1", "-o", "Acquire::http::Timeout=20", "-o", "Acquire::https::Timeout=20"]
    install = ["apt-get", *quick, "install", "-y", "--no-install-recommends", *PACKAGES]
    try:
        res = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:  # stale or absent package lists: refresh once, then retry
            subprocess.run(["apt-get", *quick, "update"], env=env, capture_output=True, text=True, timeout=timeout)
            res = subprocess.run(install, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(f"apt-get did not finish within {timeout} s (no package mirror?)") from None
    if res.returncode != 0 or _which_all(BINARIES):
        raise SlurmUnavailable(f"apt-get install {' '.join(PACKAGES)} failed: {res.stderr[-800:]}")


def _pid_alive(pid_file: Path) -> int | None:
    """Return the pid recorded in `pid_file` when that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError, IndexError):
        return None


def _stop_pid_file(pid_file: Path, timeout: float = 15.0) -> None:
    """SIGTERM the process named in `pid_file`, wait for it to exit, SIGKILL it if it does not."""
    pid = _pid_alive(pid_file)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def node_memory_mb() -> int:
    """About 90% of the node memory `slurmd -C` reports (slurmd drains a node that claims more)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"RealMemory=(\d+)", out)
    if not m:
        raise SlurmUnavailable(f"cannot read RealMemory from `slurmd -C`: {out!r}")
    return int(int(m.group(1)) * 0.9)


@dataclass
class LocalSlurm:
    """A one-node SLURM cluster whose configuration, state and logs live under `root`."""

    root: Path
    cpus: int = field(default_factory=lambda: os.cpu_count() or 1)
    gpus: int = 1
    _started_munge: bool = field(default=False, init=False)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """The environment for SLURM clients (and Snakemake) talking to this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def pid_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    def log_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.log"

    def write_config(self) -> None:
        """Write slurm.conf and gres.conf (a fake GPU backed by /dev/null) under `root`."""
        (self.root / "state").mkdir(parents=True, exist_ok=True)
        (self.root / "spool").mkdir(parents=True, exist_ok=True)
        mem = node_memory_mb()
        self.conf.write_text(f"""\
{MARKER}
ClusterName=labeldisttest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.pid_file("slurmctld")}
SlurmdPidFile={self.pid_file("slurmd")}
SlurmctldLogFile={self.log_file("slurmctld")}
SlurmdLogFile={self.log_file("slurmd")}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
ReturnToService=2
EnforcePartLimits=ALL
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={mem} Gres=gpu:{self.gpus} State=UNKNOWN
PartitionName=cpu Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost MaxTime=INFINITE State=UP
""")
        gres = "\n".join("NodeName=localhost Name=gpu File=/dev/null" for _ in range(self.gpus))
        (self.root / "gres.conf").write_text(f"{MARKER}\n{gres}\n")

    def _install_system_config(self) -> None:
        """Copy slurm.conf and gres.conf to /etc/slurm, refusing to replace a configuration not ours."""
        SYSTEM_CONF_DIR.mkdir(parents=True, exist_ok=True)
        for name in ("slurm.conf", "gres.conf"):
            target = SYSTEM_CONF_DIR / name
            if target.exists() and MARKER not in target.read_text(errors="replace"):
                raise SlurmUnavailable(f"{target} exists and was not written by these tests: not replacing it")
        for name in ("slurm.conf", "gres.conf"):
            shutil.copyfile(self.root / name, SYSTEM_CONF_DIR / name)

    def _remove_system_config(self) -> None:
        for name in ("slurm.conf", "gres.conf"):
            target = SYSTEM_CONF_DIR / name
            if target.exists() and MARKER in target.read_text(errors="replace"):
                target.unlink()

    def _start_munge(self) -> None:
        if _pid_alive(MUNGE_PID):
            return  # someone else's munged (or a leftover): use it, leave it running
        MUNGE_RUN.mkdir(parents=True, exist_ok=True)
        shutil.chown(MUNGE_RUN, "munge", "munge")
        if not MUNGE_KEY.exists():
            subprocess.run(["mungekey", "-c", "-k", str(MUNGE_KEY)], check=True)
            shutil.chown(MUNGE_KEY, "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True,
                       capture_output=True, text=True, timeout=30)
        self._started_munge = True

    def start(self, timeout: float = 60.0) -> None:
        """Start munged, slurmctld and slurmd; return once the node is idle (SlurmUnavailable if not)."""
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmctld/slurmd/munged needs root")
        self.write_config()
        self._install_system_config()
        try:
            self._start_munge()
            subprocess.run(["slurmctld", "-f", str(self.conf)], check=True, env=self.env,
                           capture_output=True, text=True, timeout=30)
            subprocess.run(["slurmd", "-f", str(self.conf), "-N", "localhost"], check=True, env=self.env,
                           capture_output=True, text=True, timeout=30)
        except subprocess.CalledProcessError as err:
            self.stop()
            raise SlurmUnavailable(f"{err.cmd[0]} failed: {err.stderr}\n{self.logs()}") from None
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.node_state()
            if state.startswith("idle"):
                return
            if "drain" in state or state.startswith("down"):
                subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"],
                               env=self.env, capture_output=True, text=True)
            time.sleep(0.5)
        self.stop()
        raise SlurmUnavailable(f"node never became idle (last state {state!r})\n{self.logs()}")

    def node_state(self) -> str:
        """The node's state as sinfo prints it (e.g. 'idle', 'mixed', 'drained'), '' when unreachable."""
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True,
                             text=True, timeout=30)
        return res.stdout.strip().splitlines()[0] if res.returncode == 0 and res.stdout.strip() else ""

    def job(self, jobid: str) -> dict[str, str]:
        """`scontrol show job` of a job as a key -> value dict (finished jobs stay for MinJobAge)."""
        res = subprocess.run(["scontrol", "-o", "show", "job", str(jobid)], env=self.env,
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            return {}
        fields = {}
        for token in res.stdout.strip().split(" "):
            key, sep, value = token.partition("=")
            if sep:
                fields[key] = value
        return fields

    def logs(self) -> str:
        """The tails of the daemons' log files, for failure messages."""
        parts = []
        for daemon in ("slurmctld", "slurmd"):
            path = self.log_file(daemon)
            if path.exists():
                parts.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-25:]))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop slurmd and slurmctld (and munged when this object started it) by their pid files."""
        _stop_pid_file(self.pid_file("slurmd"))
        _stop_pid_file(self.pid_file("slurmctld"))
        if self._started_munge:
            _stop_pid_file(MUNGE_PID)
            self._started_munge = False
        self._remove_system_config()


# ---- the plugin's sbatch call for every job of a DAG (no cluster needed) --------------------------
def _profile_default_resources(profile: Path) -> dict[str, Any]:
    import yaml

    cfg = yaml.safe_load((profile / "config.yaml").read_text())
    return dict(cfg.get("default-resources") or {})


def planned_jobs(repo: Path, configfile: Path | None, profile: Path, targets: list[str] | None = None,
                 attempts: tuple[int, ...] = (1,)) -> list[dict[str, Any]]:
    """Return, for every job of the DAG (everything forced, nothing run): rule, wildcards, outputs,
    threads, and per attempt (key "attempts", a list in the order of `attempts`) the evaluated
    resources (mem_mb, runtime, gpu), the chosen partition and the sbatch call the SLURM plugin builds.

    Uses the profile's default-resources and its partitions.yaml. Changes the working directory to
    `repo` (the Snakemake API does): call it in a subprocess (`python -m tests.slurm_cluster jobs`).
    """
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    log = logging.getLogger("slurm-plan")
    partitions = read_partition_file(profile / "partitions.yaml")
    config = ConfigSettings(configfiles=[configfile.resolve()] if configfile else [])
    resources = ResourceSettings(nodes=1000, default_resources=_profile_default_resources(profile))
    out = []
    with SnakemakeApi(OutputSettings()) as api:
        wf_api = api.workflow(resource_settings=resources, config_settings=config,
                              snakefile=repo / "Snakefile", workdir=repo)
        wf_api.dag(DAGSettings(targets=frozenset(targets or []), forceall=True))
        workflow = wf_api._workflow
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
        workflow._build_dag()
        for job in workflow.dag.jobs:
            # what Workflow.is_local decides under a remote executor (this API workflow has none)
            local = job.rule.group is None and (job.rule.name in workflow._localrules or job.rule.norun)
            per_attempt = []
            for attempt in attempts:
                job.attempt = attempt  # resets the evaluated resources
                res = job.resources
                partition = "" if local else (get_best_partition(partitions, job, log) or "")
                params = {
                    "run_uuid": "plan", "slurm_logfile": "slurm.log", "comment_str": f"rule_{job.name}",
                    "account": "", "partition": f" -p {partition}" if partition else "", "workdir": str(repo),
                }
                per_attempt.append({
                    "resources": {k: res.get(k) for k in ("mem_mb", "runtime", "gpu")},
                    "partition": partition,
                    "sbatch": "" if local else get_submit_command(job, params) + set_gres_string(job),
                })
            out.append({
                "rule": job.name,
                "local": bool(local),
                "wildcards": dict(job.wildcards_dict),
                "output": [str(f) for f in job.output],
                "threads": job.threads,
                **per_attempt[0],
                "attempts": per_attempt,
            })
    return out


def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Print the planned jobs and their sbatch calls as JSON.")
    ap.add_argument("command", choices=["jobs"])
    ap.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--configfile", type=Path)
    ap.add_argument("--profile", type=Path)
    ap.add_argument("--attempts", type=int, nargs="+", default=[1])
    ap.add_argument("--targets", nargs="*", default=[])
    args = ap.parse_args(argv)
    profile = (args.profile or args.repo / "profiles" / "slurm").resolve()
    configfile = args.configfile.resolve() if args.configfile else None
    jobs = planned_jobs(args.repo.resolve(), configfile, profile, args.targets, tuple(args.attempts))
    sys.stdout.write("\n@@JOBS@@" + json.dumps(jobs) + "\n")


if __name__ == "__main__":
    _main()
