"""A throwaway single-node SLURM cluster for the integration test: munged, slurmctld and slurmd as root.

Config, state, spool and logs live under one directory (munge's key and socket in a short-lived
directory of its own under the system temp dir, since munged wants a short path that every user can
traverse); the daemons run in the foreground as children of this process and are stopped by their
PIDs, never by name. Nothing under /etc is touched: clients find the cluster through `SLURM_CONF`, and
a small `srun` wrapper first on `PATH` re-exports it, because the Snakemake jobstep plugin drops every
`SLURM_*` variable before its inner `srun`. Without slurmdbd there is no accounting, so callers query
jobs with squeue/scontrol, and `MinJobAge` keeps finished jobs visible for an hour.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin


class ClusterError(RuntimeError):
    """The test cluster could not start, or a daemon died; the message ends with its log tail."""


def missing_requirements() -> str | None:
    """Why a test cluster cannot run here (as one line), or None when it can."""
    absent = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if absent:
        return f"SLURM/munge binaries not found: {', '.join(absent)} (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "the single-node SLURM test cluster needs root (slurmd runs jobs as their submitting user)"
    return None


def _which(name: str) -> str | None:
    """The binary's path; daemons live in /usr/sbin, which is not on every PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def node_hardware() -> dict[str, int]:
    """CPUs and RealMemory (MB) as slurmd detects them, so the node registers without being drained."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=30, check=True)
    fields = dict(item.split("=", 1) for item in out.stdout.split() if "=" in item)
    return {"CPUs": int(fields["CPUs"]), "RealMemory": int(fields["RealMemory"])}


class SlurmCluster:
    """One node, one or more partitions, all state under `root`; use as a context manager.

    `partitions` names the partitions to create on the node (the first one is the default), so a
    profile's partition names can be used unchanged. `gpus` > 0 declares that many GPUs on the node as
    a count-only GRES (no devices behind them): jobs asking `--gpus=N` are scheduled and accounted
    exactly as on a GPU cluster, and run on the CPU. `env()` gives the environment that points SLURM
    clients (and jobs, through the `srun` wrapper) at this cluster.
    """

    def __init__(
        self,
        root: Path,
        partitions: tuple[str, ...] = ("debug",),
        gpus: int = 0,
        start_timeout: float = 60,
    ):
        if not partitions:
            raise ValueError("a test cluster needs at least one partition")
        self.gpus = gpus
        self.root = Path(root).resolve()
        self.partitions = tuple(dict.fromkeys(partitions))
        self.start_timeout = start_timeout
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "etc" / "slurm.conf"
        self.bin_dir = self.root / "bin"
        # munged wants every directory above its socket searchable by all (pytest's tmp dirs are 0700)
        # and a short path: its run directory is a fresh one directly under the system temp dir.
        self.munge_dir: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Path] = {}

    @property
    def munge_socket(self) -> Path:
        if self.munge_dir is None:
            raise ClusterError("the munge run directory does not exist yet: call write_files() first")
        return self.munge_dir / "munge.socket.2"

    # -- layout ------------------------------------------------------------------------------------------

    def write_files(self) -> None:
        """Write the munge key, slurm.conf, cgroup.conf, an empty plugstack.conf and the srun wrapper."""
        for sub in ("etc", "state", "spool", "log", "bin"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if self.munge_dir is None:
            self.munge_dir = Path(tempfile.mkdtemp(prefix="toolshift-munge-"))
        self.munge_dir.chmod(0o711)  # searchable, not writable by others: munged checks both
        if len(str(self.munge_socket)) > SOCKET_PATH_MAX:
            raise ClusterError(f"munge socket path {self.munge_socket} is too long for a unix socket")
        key = self.munge_dir / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o600)
        hw = node_hardware()
        ctld_port, slurmd_port = free_port(), free_port()
        while slurmd_port == ctld_port:
            slurmd_port = free_port()
        lines = [
            "ClusterName=toolshift-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={ctld_port}",
            f"SlurmdPort={slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={self.root / 'etc' / 'plugstack.conf'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "MpiDefault=none",
            "ReturnToService=2",
            "MinJobAge=3600",  # finished jobs stay visible to squeue/scontrol (no accounting here)
            "SlurmdTimeout=60",
            "InactiveLimit=0",
            "KillWait=5",
            "MailProg=/bin/true",
        ]
        gres = ""
        if self.gpus:
            lines.append("GresTypes=gpu")
            gres = f" Gres=gpu:{self.gpus}"
        lines.append(
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={hw['CPUs']} "
            f"RealMemory={hw['RealMemory']}{gres} State=UNKNOWN"
        )
        for i, name in enumerate(self.partitions):
            default = "YES" if i == 0 else "NO"
            lines.append(
                f"PartitionName={name} Nodes={self.node} Default={default} MaxTime=INFINITE State=UP"
            )
        self.conf.write_text("\n".join(lines) + "\n")
        (self.root / "etc" / "cgroup.conf").write_text("CgroupAutomount=no\n")
        (self.root / "etc" / "gres.conf").write_text(self._gres_conf())
        (self.root / "etc" / "plugstack.conf").write_text("")
        srun = self.bin_dir / "srun"
        srun.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\nexec {_which("srun")} "$@"\n')
        srun.chmod(0o755)

    def _gres_conf(self) -> str:
        """gres.conf for the stand-in GPUs: Slurm drops file-less GPUs, so each gets a device node.

        The nodes are character devices with /dev/null's numbers (plain files where mknod is not
        allowed, which slurmd accepts with an error in its log); nothing ever opens them.
        """
        if not self.gpus:
            return ""
        dev = self.root / "dev"
        dev.mkdir(exist_ok=True)
        for i in range(self.gpus):
            path = dev / f"gpu{i}"
            if not path.exists():
                try:
                    os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
                except OSError:
                    path.touch()
        files = f"gpu[0-{self.gpus - 1}]" if self.gpus > 1 else "gpu0"
        return f"AutoDetect=off\nNodeName={self.node} Name=gpu File={dev / files}\n"

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default: os.environ) pointed at this cluster: SLURM_CONF, and the srun wrapper on PATH."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the files, start munged, slurmctld and slurmd, and wait until the node is idle."""
        self.write_files()
        munge_dir = self.munge_socket.parent
        self._spawn(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--key-file={munge_dir / 'munge.key'}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ],
        )
        self._wait(lambda: self.munge_socket.exists(), "munged to create its socket")
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(self._controller_answers, "slurmctld to answer")
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])
        self._wait(self._node_idle, f"node {self.node} to become idle")

    def stop(self) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged by PID (SIGTERM, then SIGKILL)."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                self._client(["scancel", "--full", "--user", "root"], check=False)
                self._wait(lambda: not self.queue(), "the queue to drain", timeout=30)
            except (ClusterError, subprocess.SubprocessError, OSError):
                pass  # stop the daemons regardless
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.munge_dir is not None and all(p.poll() is not None for p in self.procs.values()):
            shutil.rmtree(self.munge_dir, ignore_errors=True)

    def __enter__(self) -> SlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- queries -----------------------------------------------------------------------------------------

    def queue(self) -> list[str]:
        """Ids of jobs still pending or running."""
        out = self._client(["squeue", "--noheader", "--format=%i", "--states=PENDING,RUNNING,COMPLETING"])
        return out.split()

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, Partition, Comment, ExitCode, TRES ...)."""
        out = self._client(["scontrol", "show", "job", "--oneliner", str(job_id)])
        fields: dict[str, str] = {}
        for item in out.split():
            if "=" in item:
                key, value = item.split("=", 1)
                fields.setdefault(key, value)
        return fields

    def log_tail(self, name: str, n_chars: int = 3000) -> str:
        """The end of a daemon's log (slurmctld, slurmd, munged) for failure messages."""
        parts = []
        for path in (self.root / "log" / f"{name}.log", self._logs.get(name)):
            if path is not None and path.is_file():
                parts.append(path.read_text(errors="replace")[-n_chars:])
        return "\n".join(parts)

    # -- internals ---------------------------------------------------------------------------------------

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = self.root / "log" / f"{name}.stdout"
        self._logs[name] = out
        with open(out, "w") as fh:
            self.procs[name] = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env(), stdin=subprocess.DEVNULL
            )

    def _client(self, cmd: list[str], check: bool = True) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=30)
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def _probe(self, cmd: list[str]) -> str:
        """A client command's stdout, or "" while the cluster does not answer yet."""
        try:
            return subprocess.run(cmd, capture_output=True, text=True, env=self.env(), timeout=10).stdout
        except subprocess.TimeoutExpired:
            return ""

    def _controller_answers(self) -> bool:
        return "UP" in self._probe(["scontrol", "ping"])

    def _node_idle(self) -> bool:
        states = self._probe(["sinfo", "--noheader", "--Node", "--format=%T"]).split()
        return bool(states) and all(state == "idle" for state in states)

    def _wait(self, ready, what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.start_timeout if timeout is None else timeout)
        while time.monotonic() < deadline:
            dead = [name for name, proc in self.procs.items() if proc.poll() is not None]
            if dead:
                tails = "\n".join(f"--- {n} ---\n{self.log_tail(n)}" for n in dead)
                raise ClusterError(f"{', '.join(dead)} exited while waiting for {what}\n{tails}")
            if ready():
                return
            time.sleep(0.5)
        tails = "\n".join(f"--- {n} ---\n{self.log_tail(n)}" for n in self.procs)
        raise ClusterError(f"timed out waiting for {what}\n{tails}")
