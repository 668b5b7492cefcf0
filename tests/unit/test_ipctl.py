"""ipctl against a real controller (in-process gRPC on loopback, SQLite store)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipcontroller.cli import cli
from ipcontroller.refusal import Refusal
from tests.lab.controller import running_controller, sqlite_url
from tests.lab.helpers import free_port


@pytest.fixture(scope="module")
def addr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_controller(sqlite_url(tmp_path_factory.mktemp("ipctl"))) as ctl:
        yield f"127.0.0.1:{ctl.port}"


def ipctl(addr: str, *args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["--controller", addr, *args], catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_pool_and_subnet_lifecycle(addr: str) -> None:
    assert ipctl(addr, "pool", "create", "web", "--policy", "dynamic")[0] == 0
    code, out, _ = ipctl(addr, "subnet", "create", "web", "10.50.0.0/24", "--exclude",
                         "10.50.0.10-10.50.0.19")
    assert code == 0 and "10.50.0.0/24" in out and "gateway 10.50.0.1" in out
    code, out, _ = ipctl(addr, "subnet", "list")
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split()[:4] == ["ID", "POOL", "CIDR", "GATEWAY"]
    assert row.split()[1:] == ["web", "10.50.0.0/24", "10.50.0.1", "254", "0", "11", "0", "243"]
    code, out, _ = ipctl(addr, "pool", "list", "-o", "json")
    doc = json.loads(out)
    assert doc[0]["pool"]["name"] == "web" and doc[0]["usage"]["free"] == 243
    code, out, _ = ipctl(addr, "-o", "json", "port", "list")
    assert code == 0 and json.loads(out) == []
    code, out, _ = ipctl(addr, "pool", "show", "web")
    assert code == 0 and "10.50.0.0/24" in out


def test_bindings_and_reservations(addr: str) -> None:
    ipctl(addr, "pool", "create", "vm", "--policy", "fixed")
    ipctl(addr, "subnet", "create", "vm", "10.51.0.0/24")
    code, out, _ = ipctl(addr, "bind", "vm", "ns/vm-1", "--ip", "10.51.0.40", "--hostname", "v1")
    assert code == 0 and "10.51.0.40/24" in out
    code, out, _ = ipctl(addr, "port", "list", "--pool", "vm", "-o", "json")
    ports = json.loads(out)
    assert ports[0]["owner"] == "ns/vm-1" and ports[0]["state"] == "idle"
    assert ipctl(addr, "reserve", "vm", "10.51.0.41", "10.51.0.42")[0] == 0
    code, out, _ = ipctl(addr, "-o", "json", "usage")
    vm = next(p for p in json.loads(out) if p["pool"]["name"] == "vm")
    assert vm["usage"]["bound"] == 1 and vm["usage"]["reserved"] == 3
    assert ipctl(addr, "unbind", "vm", "ns/vm-1")[0] == 0
    code, out, _ = ipctl(addr, "unbind", "vm", "ns/vm-1")   # idempotent for scripts
    assert code == 0 and "nothing to do" in out


def test_subnet_show_release_unreserve_and_deletes(addr: str) -> None:
    assert ipctl(addr, "pool", "create", "grp", "--policy", "sticky")[0] == 0
    code, out, _ = ipctl(addr, "subnet", "create", "grp", "10.53.0.0/28")
    assert code == 0
    code, out, _ = ipctl(addr, "-o", "json", "subnet", "list", "--pool", "grp")
    sid = json.loads(out)[0]["id"]
    code, out, _ = ipctl(addr, "subnet", "show", "10.53.0.0/28")
    assert code == 0 and sid in out and "free" in out and "13" in out
    assert "network id" not in out            # never sent: the ONOS network is the pool's
    assert ipctl(addr, "subnet", "show", sid[:8])[0] == 0
    code, _, err = ipctl(addr, "subnet", "show", "10.99.0.0/24")
    assert code == 1 and err == "ipctl: error: subnet '10.99.0.0/24' does not exist\n"
    # a sticky member's kept IP: bound, then released by the admin
    assert ipctl(addr, "bind", "grp", "shop/db-0")[0] == 0
    code, out, _ = ipctl(addr, "release", "grp", "shop/db-0")
    assert code == 0 and "shop/db-0 released in pool grp" in out
    # reserve / unreserve change the usage both ways
    def reserved() -> int:
        code, out, _ = ipctl(addr, "-o", "json", "subnet", "show", sid)
        return int(json.loads(out)["usage"].get("reserved", 0))
    before = reserved()                       # the gateway counts as reserved
    assert ipctl(addr, "reserve", "grp", "10.53.0.9")[0] == 0
    assert reserved() == before + 1
    assert ipctl(addr, "unreserve", "grp", "10.53.0.9")[0] == 0
    assert reserved() == before
    # deletes, and what they refuse
    code, _, err = ipctl(addr, "pool", "delete", "grp")
    assert code == 1 and "still has subnets" in err
    code, _, err = ipctl(addr, "subnet", "delete", "")
    assert code == 1 and "required" in err
    assert ipctl(addr, "subnet", "delete", "10.53.0.0/28")[0] == 0
    assert ipctl(addr, "pool", "delete", "grp")[0] == 0
    code, out, _ = ipctl(addr, "-o", "json", "pool", "list")
    assert "grp" not in {p["pool"]["name"] for p in json.loads(out)}


def test_sync_commands_without_onos_say_so(addr: str) -> None:
    code, out, _ = ipctl(addr, "sync", "status")
    assert code == 0 and "enabled" in out
    code, _, err = ipctl(addr, "sync", "now")
    assert code == 1 and "--onos-url" in err


@pytest.mark.parametrize("args,msg", [
    (["pool", "show", "nope"], "pool 'nope' does not exist"),
    (["subnet", "create", "nope", "10.52.0.0/24"], "pool 'nope' does not exist"),
    (["pool", "create", "web", "--policy", "fixed"], "pool 'web' already exists"),
])
def test_errors_are_one_line(addr: str, args: list[str], msg: str) -> None:
    ipctl(addr, "pool", "create", "web", "--policy", "dynamic")
    code, out, err = ipctl(addr, *args)
    assert code == 1 and out == "" and err == f"ipctl: error: {msg}\n"


def test_usage_errors_exit_2_without_calling(addr: str) -> None:
    code, _, err = ipctl("127.0.0.1:1", "pool", "create", "x", "--policy", "bogus")
    assert code == 2 and "Invalid value" in err


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    return subprocess.run([sys.executable, "-m", "ipcontroller.cli", *args], cwd=root,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_unreachable_controller_as_a_process() -> None:
    port = free_port()
    p = run("--controller", f"127.0.0.1:{port}", "--timeout", "2", "pool", "list")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith(f"ipctl: error: cannot reach the IP controller at 127.0.0.1:{port}")
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_env_controller_as_a_process(addr: str) -> None:
    p = run("pool", "list", env={"ECNET_CONTROLLER": addr})
    assert p.returncode == 0 and p.stdout.splitlines()[0].split()[0] == "NAME"


class RefusingAdmin(pb_grpc.IPAdminServicer):
    """An IPAdmin that refuses ListPools with the trailing metadata it is given: an older
    controller (only "ecnet-error"), a newer one (only the ErrorDetail), or none (a proxy)."""

    def __init__(self) -> None:
        self.status = grpc.StatusCode.UNKNOWN
        self.metadata: tuple[tuple[str, str | bytes], ...] = ()

    def ListPools(self, request: pb.ListPoolsRequest, context: grpc.ServicerContext) -> Any:
        context.set_trailing_metadata(self.metadata)
        context.abort(self.status, "ONOS at http://onos:8181 refused the call")


@pytest.fixture
def refusing() -> Iterator[tuple[RefusingAdmin, str]]:
    servicer = RefusingAdmin()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_IPAdminServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_a_refusal_keeps_the_controllers_sentence_from_old_and_new_controllers(
        refusing: tuple[RefusingAdmin, str]) -> None:
    """UNAVAILABLE with a reason is the controller speaking (ONOS down, store busy), not a
    transport failure; without one it is. Both versions' ways of giving the reason count."""
    servicer, addr = refusing
    reason = Refusal(grpc.StatusCode.UNAVAILABLE, pb.ERROR_CODE_ONOS_UNAVAILABLE,
                     "ONOS at http://onos:8181 refused the call")
    for metadata in (reason.trailing_metadata(legacy=False),      # a newer controller
                     (("ecnet-error", "OnosError"),),             # an older controller
                     reason.trailing_metadata()):                 # this one: both
        servicer.status, servicer.metadata = grpc.StatusCode.UNAVAILABLE, metadata
        code, out, err = ipctl(addr, "pool", "list")
        assert (code, out) == (1, "")
        assert err == "ipctl: error: ONOS at http://onos:8181 refused the call\n", metadata
    servicer.metadata = ()
    code, _, err = ipctl(addr, "pool", "list")
    assert code == 1 and err.startswith(f"ipctl: error: cannot reach the IP controller at {addr}")


def test_a_bug_is_one_line_that_says_it_is_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipcontroller import cli as ipctl_cli

    def broken(self: ipctl_cli.IpctlSettings, method: str, request: Any) -> Any:
        raise TypeError("'NoneType' object is not subscriptable")
    monkeypatch.setattr(ipctl_cli.IpctlSettings, "call", broken)
    code, out, err = ipctl("127.0.0.1:1", "pool", "list")
    assert (code, out) == (1, "")
    assert err == "ipctl: error: internal error: TypeError: 'NoneType' object is not " \
                  "subscriptable\n"


def test_values_from_pods_print_as_themselves_not_as_markup(addr: str) -> None:
    ipctl(addr, "pool", "create", "mk", "--policy", "fixed")
    ipctl(addr, "subnet", "create", "mk", "10.57.0.0/24")
    for owner in ("team-x/app[/]", "team-y/[bold]b[/bold]", "team-z/\\[x]"):
        assert ipctl(addr, "bind", "mk", owner)[0] == 0
    code, out, err = ipctl(addr, "port", "list", "--pool", "mk")
    assert code == 0, err
    for owner in ("team-x/app[/]", "team-y/[bold]b[/bold]", "team-z/\\[x]"):
        assert owner in out, out


def test_port_list_pages_through_every_port(addr: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import ipcontroller.cli as cli_mod
    monkeypatch.setattr(cli_mod, "PORT_PAGE", 2)
    ipctl(addr, "pool", "create", "pg", "--policy", "fixed")
    ipctl(addr, "subnet", "create", "pg", "10.58.0.0/24")
    for i in range(5):
        assert ipctl(addr, "bind", "pg", f"ns/o{i}")[0] == 0
    code, out, _ = ipctl(addr, "-o", "json", "port", "list", "--pool", "pg")
    assert code == 0 and sorted(p["owner"] for p in json.loads(out)) == [
        f"ns/o{i}" for i in range(5)]
    code, out, _ = ipctl(addr, "-o", "json", "port", "list", "--pool", "pg", "--limit", "3")
    assert code == 0 and len(json.loads(out)) == 3
