"""A single-node SLURM cluster on this machine, from Debian's packages: munge, slurmctld, slurmd,
and accounting (slurmdbd on MariaDB), since submitit learns that a job died (cancelled, killed,
out of time) only from sacct.

Everything it writes lives in one folder: the munge key and socket, the database, slurm.conf and
slurmdbd.conf, the state and spool folders, the logs. Clients (sbatch, squeue, sacct, scancel, and
submitit through them) find it by SLURM_CONF. `.ci/run` installs the packages, as it does PostgreSQL's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.postgres import free_ports  # a loopback port for each daemon

DB_USER, DB_PASSWORD = "slurm", "coldclimb"
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
SBIN = Path("/usr/sbin")


def installed() -> bool:
    return all((SBIN / daemon).exists() for daemon in DAEMONS) and shutil.which("sacctmgr") is not None


def _memory_mb() -> int:
    return int(Path("/proc/meminfo").read_text().split()[1]) // 1024


def _user() -> str:
    return subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()


def write_dbd_conf(root: Path, db_port: int, dbd_port: int) -> Path:
    conf = root / "slurmdbd.conf"
    conf.write_text("\n".join([
        "AuthType=auth/munge", f"AuthInfo=socket={root / 'munge.socket'}", f"SlurmUser={_user()}",
        "DbdHost=localhost", f"DbdPort={dbd_port}", f"PidFile={root / 'slurmdbd.pid'}",
        f"LogFile={root / 'log' / 'slurmdbd.log'}", "StorageType=accounting_storage/mysql",
        "StorageHost=127.0.0.1", f"StoragePort={db_port}", f"StorageUser={DB_USER}", f"StoragePass={DB_PASSWORD}",
        "StorageLoc=slurm_acct_db", ""]))
    conf.chmod(0o600)  # slurmdbd refuses a config others can read: it holds the database password
    return conf


def write_conf(root: Path, cpus: int, ctld_port: int, d_port: int, dbd_port: int) -> Path:
    node, user = socket.gethostname(), _user()
    for folder in ("state", "spool"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=coldclimb", f"SlurmctldHost={node}", f"SlurmUser={user}", f"SlurmdUser={user}",
        f"SlurmctldPort={ctld_port}", f"SlurmdPort={d_port}",
        "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={root / 'munge.socket'}",
        "AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
        f"AccountingStoragePort={dbd_port}", f"AccountingStoragePass={root / 'munge.socket'}",  # munge, for slurmdbd
        "JobAcctGatherType=jobacct_gather/none",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        # No cgroups in a container: processes are tracked by parentage, tasks are not confined.
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "ReturnToService=2", "SlurmdTimeout=30", "InactiveLimit=0",
        "JobCompType=jobcomp/none", "KillWait=5", "MinJobAge=300",
        f"NodeName={node} CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
        "PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    return conf


class Cluster:
    """Start with `start()`, stop with `stop()`; `env` is what a client needs to reach it."""

    def __init__(self, root: Path, cpus: int = os.cpu_count() or 1):
        self.root, self.cpus, self.processes, self.logs = Path(root), cpus, [], []

    @property
    def env(self) -> dict:
        return {**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")}

    def start(self, timeout: float = 60) -> "Cluster":
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> "Cluster":
        root, key = self.root, self.root / "munge.key"
        (root / "log").mkdir(parents=True, exist_ok=True)
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self._spawn(SBIN / "munged", "--foreground", "--force", f"--key-file={key}",
                    f"--socket={root / 'munge.socket'}", f"--pid-file={root / 'munged.pid'}",
                    f"--seed-file={root / 'munged.seed'}", f"--log-file={root / 'log' / 'munged.log'}")
        self._wait(lambda: (root / "munge.socket").exists(), timeout, "munged")
        db_port, dbd_port, ctld_port, d_port = free_ports(4)
        self._start_database(db_port, timeout)
        conf = write_conf(root, self.cpus, ctld_port, d_port, dbd_port)
        write_dbd_conf(root, db_port, dbd_port)  # slurmdbd reads it from SLURM_CONF's folder
        self._spawn(SBIN / "slurmdbd", "-D")
        self._wait(lambda: self._run("sacctmgr", "-i", "add", "cluster", "coldclimb").returncode == 0, timeout,
                   "slurmdbd")
        self._spawn(SBIN / "slurmctld", "-D", "-i", "-f", str(conf))
        self._spawn(SBIN / "slurmd", "-D", "-f", str(conf))
        self._wait(self._idle, timeout, "the node")
        return self

    def _start_database(self, port: int, timeout: float) -> None:
        """MariaDB for slurmdbd, on a loopback port, with a user for it."""
        data, sock = self.root / "db", self.root / "db.socket"
        subprocess.run(["mariadb-install-db", f"--datadir={data}", f"--user={_user()}", "--skip-test-db",
                        "--auth-root-authentication-method=socket"], capture_output=True, check=True)
        self._spawn(SBIN / "mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
                    "--bind-address=127.0.0.1", f"--user={_user()}", f"--pid-file={self.root / 'db.pid'}")
        grant = (f"CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';"
                 f"GRANT ALL ON slurm_acct_db.* TO '{DB_USER}'@'127.0.0.1';")
        self._wait(lambda: subprocess.run(["mariadb", f"--socket={sock}", "-u", _user(), "-e", grant],
                                          capture_output=True).returncode == 0, timeout, "MariaDB")

    def _spawn(self, *command) -> None:
        log = open(self.root / "log" / f"{Path(command[0]).name}.out", "w")
        self.logs.append(log)
        self.processes.append(subprocess.Popen([str(c) for c in command], stdout=log, stderr=subprocess.STDOUT,
                                               env=self.env, start_new_session=True))

    def _run(self, *command) -> subprocess.CompletedProcess:
        return subprocess.run(command, capture_output=True, text=True, env=self.env)

    def _idle(self) -> bool:
        state = self._run("sinfo", "-h", "-o", "%t")
        return state.returncode == 0 and state.stdout.strip() in ("idle", "mix", "alloc")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                logs = "\n".join(f"{p.name}: {p.read_text()[-2000:]}" for p in sorted((self.root / "log").iterdir()))
                raise RuntimeError(f"{what} did not come up in {timeout:.0f} s; logs:\n{logs}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Jobs first (their training processes outlive slurmd), then the daemons, newest first."""
        if self.processes and self._run("scancel", f"--user={_user()}").returncode == 0:
            deadline = time.monotonic() + 30
            while self._run("squeue", "-h", "-o", "%i").stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for process in reversed(self.processes):
            process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for log in self.logs:
            log.close()
        self.processes, self.logs = [], []
