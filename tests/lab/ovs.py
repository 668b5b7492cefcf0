"""A private userspace Open vSwitch for tests (our own copy of the lab recipe, so a
clone of the project runs without ../shared).

Each instance has its own directory holding conf.db, db.sock, pid files, logs and,
because ovs-vswitchd runs with OVS_RUNDIR=DIR, every bridge's DIR/<bridge>.mgmt
socket. Optionally the daemons run inside a network namespace, so the netdevs they
create (the bridges' tap devices) and open (veths) never touch the host's namespace.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.lab.helpers import pid_alive

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 30.0) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed rc={proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def vsctl(remote: str, *args: str) -> str:
    """ovs-vsctl against ``remote``: tests assert state with this independent tool,
    never with the client under test. Returns stdout without the trailing newline."""
    return _run(["ovs-vsctl", f"--db={remote}", "--timeout=10", *args]).rstrip("\n")


def _datum(value: Any) -> Any:
    # Decoded here, not with ovs_driver's helpers, so assertions stay independent.
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        tag, body = value
        if tag == "set":
            return [_datum(v) for v in body]
        if tag == "map":
            return {_datum(k): _datum(v) for k, v in body}
        if tag == "uuid":
            return body
    return value


def vsctl_rows(remote: str, command: str, table: str, *args: str) -> list[dict[str, Any]]:
    """``ovs-vsctl --format=json list|find TABLE ...`` as a list of column dicts
    (sets as lists, maps as dicts, empty optional columns as [])."""
    out = vsctl(remote, "--format=json", command, table, *args)
    doc = json.loads(out)
    return [{h: _datum(v) for h, v in zip(doc["headings"], row, strict=True)}
            for row in doc["data"]]


def unique(prefix: str, length: int = 6) -> str:
    """A name no parallel test run will pick (interface names stay <= 15 chars)."""
    return f"{prefix}{uuid.uuid4().hex[:length]}"


def add_netns(name: str | None = None) -> str:
    name = name or unique("ecnt-")
    _run(["ip", "netns", "add", name])
    _run(["ip", "-n", name, "link", "set", "lo", "up"])
    return name


def del_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def _kill_and_wait(pid: int, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.02)


class PrivateOvs:
    """ovsdb-server + ovs-vswitchd (userspace datapath) owned by one test."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        self.netns: str | None = None

    @property
    def remote(self) -> str:
        return f"unix:{self._dir / 'db.sock'}"

    @property
    def rundir(self) -> str:
        """Where ovs-vswitchd puts <bridge>.mgmt (ovs-ofctl's target)."""
        return str(self._dir)

    @property
    def _dir(self) -> Path:
        if self.dir is None:
            raise RuntimeError("PrivateOvs not started")
        return self.dir

    def _env(self) -> dict[str, str]:
        return {**os.environ, "OVS_RUNDIR": str(self._dir), "OVS_DBDIR": str(self._dir),
                "OVS_LOGDIR": str(self._dir)}

    def _in_ns(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *cmd] if self.netns else cmd

    def start(self, dir: str | os.PathLike[str], netns: str | None = None) -> PrivateOvs:
        self.dir = Path(dir)
        self.netns = netns
        self.dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.dir / "some-bridge-name.mgmt")) > 100:
            # sun_path is 108 bytes; a long tmp path breaks mgmt sockets silently.
            raise ValueError(f"OVS dir {self.dir} too long for unix sockets")
        db = self.dir / "conf.db"
        if not db.exists():
            _run(["ovsdb-tool", "create", str(db), SCHEMA])
        self.start_ovsdb_server()
        vsctl(self.remote, "--no-wait", "init")
        self.start_vswitchd()
        return self

    def start_vswitchd(self) -> None:
        """(Re)start only ovs-vswitchd, e.g. after :meth:`kill_vswitchd`."""
        d = self._dir
        _run(self._in_ns([
            "ovs-vswitchd", self.remote,
            f"--pidfile={d / 'vswitchd.pid'}",
            f"--unixctl={d / 'vswitchd.ctl'}",
            f"--log-file={d / 'vswitchd.log'}",
            "-vconsole:off", "--detach",
        ]), env=self._env())

    def kill_vswitchd(self, sig: int = signal.SIGKILL) -> None:
        """Make ovs-vswitchd vanish the hard way: its flows go with it, OVSDB stays."""
        pid = self._pid("vswitchd")
        if pid is not None:
            _kill_and_wait(pid, sig=sig)

    def start_ovsdb_server(self) -> None:
        """(Re)start only ovsdb-server, e.g. after :meth:`kill_ovsdb_server`."""
        d = self._dir
        _run(self._in_ns([
            "ovsdb-server", str(d / "conf.db"),
            f"--remote=punix:{d / 'db.sock'}",
            f"--pidfile={d / 'ovsdb.pid'}",
            f"--unixctl={d / 'ovsdb.ctl'}",
            f"--log-file={d / 'ovsdb.log'}",
            "-vconsole:off", "--detach",
        ]), env=self._env())

    def kill_ovsdb_server(self, sig: int = signal.SIGKILL) -> None:
        """Make ovsdb-server vanish the hard way (default SIGKILL), to test reconnects."""
        pid = self._pid("ovsdb")
        if pid is not None:
            _kill_and_wait(pid, sig=sig)
        (self._dir / "db.sock").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.dir is None:
            return
        for name in ("vswitchd", "ovsdb"):
            pid = self._pid(name)
            if pid is not None:
                _kill_and_wait(pid)

    def _pid(self, name: str) -> int | None:
        try:
            return int((self._dir / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, name: str = "vswitchd", lines: int = 40) -> str:
        try:
            text = (self._dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _short_tmpdir() -> str:
    # pytest's tmp_path is too long for unix socket paths (bridge .mgmt sockets).
    return tempfile.mkdtemp(prefix="ecnet-ovs-", dir="/tmp")


@contextmanager
def running_private_ovs(netns: bool | str = True) -> Iterator[PrivateOvs]:
    """A started private OVS, stopped and removed afterwards.

    ``netns=True`` (the fixtures' choice) runs it in a fresh namespace: with the
    userspace datapath every bridge is also a tap device named after it, so two
    parallel runs both using "br-int" in the host namespace would collide. Plug
    veths into it from ``ovs.netns``. ``False`` runs it in the caller's namespace; a
    string names an existing namespace (left in place afterwards).
    """
    ovs = PrivateOvs()
    d = _short_tmpdir()
    own_ns = None
    try:
        if netns is True:
            own_ns = add_netns()
        ovs.start(d, own_ns if netns is True else (netns or None))
        yield ovs
    finally:
        ovs.stop()
        if own_ns is not None:
            del_netns(own_ns)
        if os.environ.get("ECNET_KEEP_LAB") != "1":
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def private_ovs() -> Iterator[PrivateOvs]:
    """A started private OVS, in a network namespace of its own, for one test."""
    with running_private_ovs() as ovs:
        yield ovs


@pytest.fixture(scope="module")
def private_ovs_module() -> Iterator[PrivateOvs]:
    """The same, shared by a module's tests (each should use its own bridge names)."""
    with running_private_ovs() as ovs:
        yield ovs
