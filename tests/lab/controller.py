"""Run a real IP controller in-process (gRPC on a loopback port) for tests."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
