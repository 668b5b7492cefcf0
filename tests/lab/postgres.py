"""A private PostgreSQL server for one test: Debian's initdb and pg_ctl, run as the postgres
user, with its data directory under the test's tmp dir, its own TCP port on 127.0.0.1 and its
unix socket in a short tmp dir of its own. Tests that crash or restart the database use it, so
the machine's shared server (other people's tests run on it) is never touched. Stopped by the
postmaster's pid, even when the test fails.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.lab.helpers import free_port, pid_alive, wait_until

USER = "postgres"


def bin_dir() -> Path | None:
    """The newest installed server's binaries (Debian keeps them out of PATH), or None."""
    found = [Path(d) for d in glob.glob("/usr/lib/postgresql/*/bin")
             if all(os.access(Path(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))]
    return max(found, key=lambda d: int(d.parent.name)
               if d.parent.name.isdigit() else 0) if found else None


def available() -> str:
    """Why a private server cannot run here ("" when it can)."""
    if bin_dir() is None:
        return ("needs PostgreSQL's server binaries in /usr/lib/postgresql/*/bin "
                "(apt-get install postgresql)")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"needs the {USER} user (apt-get install postgresql)"
    if shutil.which("runuser") is None:
        return "needs runuser (util-linux)"
    return ""


class PrivatePostgres:
    """One initdb'd cluster, trust auth, database `postgres`."""

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        bins = bin_dir()
        if bins is None:
            raise RuntimeError(available())
        self.bin = bins
        self.dir = Path(workdir)
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self.sockdir = tempfile.mkdtemp(prefix="ecnet-pg-", dir="/tmp")  # sun_path is short
        self.port = free_port()
        self.pid: int | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/postgres"

    def _as_user(self, *argv: str, timeout: float = 60) -> None:
        p = subprocess.run(["runuser", "-u", USER, "--", *argv], capture_output=True,
                           timeout=timeout, check=False)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({p.returncode}): "
                               f"{p.stderr.decode().strip()} {self.log_tail()}")

    def start(self) -> PrivatePostgres:
        """initdb on first use, then start and wait until it accepts connections."""
        self.dir.mkdir(parents=True, exist_ok=True)
        uid, gid = pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid
        for path in (self.dir, Path(self.sockdir)):
            os.chown(path, uid, gid)
        # the test tmp dir's parents are root's: the postgres user must be able to walk them
        for parent in self.dir.parents:
            if str(parent) in ("/", "/tmp"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o011)
        if not self.data.exists():
            self._as_user(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", USER, "--no-sync", "-E", "UTF8")
            with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
                # fsync off: an immediate stop kills the server, not the kernel, whose page
                # cache keeps every write; a test that crashes the machine would need it.
                conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                           f"unix_socket_directories = '{self.sockdir}'\n"
                           "fsync = off\nmax_connections = 100\n")
        self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                      "-w", "-t", "60", "start")
        self.pid = self._postmaster_pid()
        return self

    def _postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def crash(self) -> None:
        """`pg_ctl stop -m immediate`: every backend killed, no checkpoint, as in a crash
        (the next start runs crash recovery)."""
        self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "stop")
        self.pid = None

    def restart(self) -> None:
        """`pg_ctl restart -m immediate`: a crash and a start in one go."""
        self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                      "-w", "-t", "60", "-l", str(self.log), "restart")
        self.pid = self._postmaster_pid()

    def stop(self) -> None:
        """By the postmaster's pid: SIGQUIT (immediate shutdown), SIGKILL if it lingers."""
        pid = self.pid
        if pid is None and (self.data / "postmaster.pid").exists():
            pid = self._postmaster_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGQUIT)
            except ProcessLookupError:
                pid = None
        if pid is not None and not wait_until(lambda: not pid_alive(pid), timeout=20):
            os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not pid_alive(pid), timeout=10)
        self.pid = None
        shutil.rmtree(self.sockdir, ignore_errors=True)

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

