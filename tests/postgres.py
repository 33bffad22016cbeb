"""A throwaway PostgreSQL server on 127.0.0.1 for tests (initdb refuses root: it runs as `postgres`)."""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path


def server_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def free_ports(count: int = 1) -> list[int]:
    """Loopback ports free now, and distinct: each is held until all are found."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextmanager
def postgres_server():
    """Yield a SQLAlchemy URL of a fresh database; stop the server and remove its files after."""
    root = Path(tempfile.mkdtemp(prefix="coldclimb-pg-"))  # pytest's own tmp tree is closed to `postgres`
    bin_dir, [port], data = server_bin(), free_ports(), root / "pgdata"
    shutil.chown(root, "postgres")

    def as_postgres(*command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True, capture_output=True, timeout=120)

    as_postgres(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres")
    as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(root / "server.log"), "-o",
                f"-p {port} -h 127.0.0.1 -k {root}", "start")
    try:
        as_postgres(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "optuna")
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
    finally:
        as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)
