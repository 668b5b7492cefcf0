"""Run a real IP controller in-process (gRPC on a loopback port) for tests."""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from ipcontroller.daemon import IpControllerDaemon, parse_args


@contextmanager
def running_controller(db: str, *extra: str) -> Iterator[IpControllerDaemon]:
    ctl = IpControllerDaemon(parse_args(["--listen", "127.0.0.1:0", "--db", db,
                                 "--sweep-interval", "0.2", *extra]))
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop(grace=0.5)


def sqlite_url(tmp: Path) -> str:
    return f"sqlite:///{tmp}/ipam.db"


ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def replica_process(db: str, sock: Path, log: Path, *extra: str
                    ) -> Iterator[subprocess.Popen[bytes]]:
    """A controller replica as a process of its own (one a test may SIGKILL), serving on
    unix socket `sock` (admin) once it answers; terminated at the end if still running."""
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ipcontroller.daemon", "--listen",
                                 f"unix:{sock}", "--db", db, "--log-level", "warning", *extra],
                                cwd=ROOT, stdout=out, stderr=out,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        with grpc.insecure_channel(f"unix:{sock}") as ch:
            grpc.channel_ready_future(ch).result(timeout=60)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(20)
