"""Nobody in: mutual TLS on the controller's TCP listener, identities from the client
certificate's CN, the unix socket's modes, and the plaintext rule. Real gRPC on loopback, a
real SQLite store, certificates from the shipped packaging/tls/make-certs.sh."""
from __future__ import annotations

import grp
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner

from cni import errors as ce
from cni.agent.controller import AgentTls, GrpcControllerClient
from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipcontroller.cli import cli
from ipcontroller.daemon import IpControllerDaemon, parse_args
from tests.lab.controller import running_controller, sqlite_url
from tests.lab.tls import Pki, make_pki
from tests.unit.test_controller_grpc import reason


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    p = make_pki(tmp_path_factory.mktemp("pki"), "a", "b")
    p.issue("stranger", "mallory")
    return p


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA, with the same CNs: its admin.pem must get nowhere."""
    return make_pki(tmp_path_factory.mktemp("rogue"), "a")


@pytest.fixture(scope="module")
def ctl(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IpControllerDaemon]:
    tmp = tmp_path_factory.mktemp("ctl")
    with running_controller(sqlite_url(tmp), *pki.controller_flags()) as c:
        admin = pb_grpc.IPAdminStub(grpc.secure_channel(f"127.0.0.1:{c.port}",
                                                        pki.credentials("admin")))
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")),
                         timeout=10)
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.9.0.0/24"), timeout=10)
        yield c


def channel(ctl: IpControllerDaemon, pki: Pki, name: str | None) -> grpc.Channel:
    return grpc.secure_channel(f"127.0.0.1:{ctl.port}", pki.credentials(name))


def alloc(cid: str, node: str) -> pb.AllocateRequest:
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node=node, pool="p",
                              pod=pb.PodRef(namespace="ns", name=f"pod-{cid}", uid=f"u-{cid}"))


def denied(call: object, request: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(request, timeout=10)  # type: ignore[operator]
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert reason(err.value) == pb.ERROR_CODE_PERMISSION_DENIED
    return err.value


@pytest.mark.parametrize("who", ["no certificate", "another CA"])
def test_a_client_without_our_certificate_fails_the_handshake(
        ctl: IpControllerDaemon, pki: Pki, rogue: Pki, who: str) -> None:
    cert, key = rogue.pair("admin")
    creds = (pki.credentials(None) if who == "no certificate" else grpc.ssl_channel_credentials(
        pki.ca.read_bytes(), key.read_bytes(), cert.read_bytes()))
    with grpc.secure_channel(f"127.0.0.1:{ctl.port}", creds) as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.IPAdminStub(ch).ListPorts(pb.ListPortsRequest(), timeout=10)
    # The handshake fails: the call never reaches a handler, so no reason is given.
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert not dict(err.value.trailing_metadata() or ())  # type: ignore[attr-defined]


def test_a_plaintext_client_gets_nothing_from_the_tls_listener(ctl: IpControllerDaemon) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{ctl.port}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.IPAdminStub(ch).ListPorts(pb.ListPortsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]


def test_a_node_may_not_release_another_nodes_port(ctl: IpControllerDaemon, pki: Pki) -> None:
    a = pb_grpc.IPControllerStub(channel(ctl, pki, "node-a"))
    b = pb_grpc.IPControllerStub(channel(ctl, pki, "node-b"))
    port = a.AllocatePort(alloc("rel-a", "a"), timeout=10).port
    denied(b.ReleasePort, pb.ReleaseRequest(container_id="rel-a", ifname="eth0"))
    denied(b.GetPort, pb.GetPortRequest(container_id="rel-a", ifname="eth0"))
    # Nor get it as the answer to a "retried" ADD naming itself.
    denied(b.AllocatePort, alloc("rel-a", "b"))
    # Still a's, still active: b changed nothing.
    assert a.GetPort(pb.GetPortRequest(container_id="rel-a", ifname="eth0"),
                     timeout=10).port.id == port.id
    # Releasing what does not exist is b's own business (DEL is forgiving).
    assert not b.ReleasePort(pb.ReleaseRequest(container_id="nothing", ifname="eth0"),
                             timeout=10).found
    assert a.ReleasePort(pb.ReleaseRequest(container_id="rel-a", ifname="eth0"),
                         timeout=10).found


def test_a_node_acts_only_for_itself(ctl: IpControllerDaemon, pki: Pki) -> None:
    b = pb_grpc.IPControllerStub(channel(ctl, pki, "node-b"))
    denied(b.AllocatePort, alloc("alloc-as-a", "a"))
    err = denied(b.RegisterNode, pb.RegisterNodeRequest(
        node=pb.NodeInfo(name="a", underlay_ip="192.0.2.66")))
    assert "'b'" in err.details() and "'a'" in err.details()  # type: ignore[attr-defined]
    assert b.RegisterNode(pb.RegisterNodeRequest(
        node=pb.NodeInfo(name="b", underlay_ip="192.0.2.2")), timeout=10).node.name == "b"
    assert b.GetTopology(pb.TopologyRequest(), timeout=10).revision
    assert b.AllocatePort(alloc("alloc-b", "b"), timeout=10).port.node == "b"


def test_a_node_watches_the_topology_only_for_itself(ctl: IpControllerDaemon, pki: Pki) -> None:
    b = pb_grpc.IPControllerStub(channel(ctl, pki, "node-b"))

    def first(node: str) -> pb.WatchTopologyEvent:
        stream = b.WatchTopology(pb.WatchTopologyRequest(node=node), timeout=10)
        try:
            return next(stream)
        finally:
            stream.cancel()

    denied(lambda req, timeout: first(req.node), pb.WatchTopologyRequest(node="a"))
    denied(lambda req, timeout: first(req.node), pb.WatchTopologyRequest(node=""))
    ev = first("b")
    assert ev.reset and ev.complete and ev.revision


@pytest.mark.parametrize("method,request_", [
    ("ListPorts", pb.ListPortsRequest()),
    ("DeletePool", pb.DeletePoolRequest(name="p")),
    ("DeleteSubnet", pb.DeleteSubnetRequest(cidr="10.9.0.0/24")),
    ("DeleteNode", pb.DeleteNodeRequest(name="a")),
    ("Bind", pb.BindRequest(pool="p", owner="ns/x")),
])
def test_a_node_may_not_call_admin_rpcs(ctl: IpControllerDaemon, pki: Pki, method: str,
                                        request_: object) -> None:
    admin = pb_grpc.IPAdminStub(channel(ctl, pki, "node-a"))
    denied(getattr(admin, method), request_)


def test_an_unknown_identity_is_refused_everything(ctl: IpControllerDaemon, pki: Pki) -> None:
    ch = channel(ctl, pki, "stranger")
    denied(pb_grpc.IPControllerStub(ch).GetTopology, pb.TopologyRequest())
    denied(pb_grpc.IPAdminStub(ch).ListPools, pb.ListPoolsRequest())


def test_admin_may_call_everything(ctl: IpControllerDaemon, pki: Pki) -> None:
    ch = channel(ctl, pki, "admin")
    admin, agent = pb_grpc.IPAdminStub(ch), pb_grpc.IPControllerStub(ch)
    assert agent.AllocatePort(alloc("by-admin", "a"), timeout=10).port.node == "a"
    assert "by-admin" in [p.container_id for p in
                          admin.ListPorts(pb.ListPortsRequest(), timeout=10).ports]
    assert agent.ReleasePort(pb.ReleaseRequest(container_id="by-admin", ifname="eth0"),
                             timeout=10).found
    admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="gone", policy="dynamic")),
                     timeout=10)
    admin.DeletePool(pb.DeletePoolRequest(name="gone"), timeout=10)


def test_agent_client_over_mtls_and_a_refusal_is_not_retryable(
        ctl: IpControllerDaemon, pki: Pki) -> None:
    cert, key = pki.pair("node-a")
    client = GrpcControllerClient(f"127.0.0.1:{ctl.port}", timeout=10,
                                  tls=AgentTls(str(cert), str(key), str(pki.ca)))
    try:
        port = client.allocate_async(alloc("agent-a", "a"))().port
        assert client.get_port("agent-a", "eth0").id == port.id
        with pytest.raises(ce.CniError) as err:
            client.register_node(pb.NodeInfo(name="b", underlay_ip="192.0.2.9"))
        assert not isinstance(err.value, ce.TryAgainLater)
        assert client.release(pb.ReleaseRequest(container_id="agent-a", ifname="eth0")).found
    finally:
        client.close()


def test_ipctl_over_mtls_with_flags_and_env(ctl: IpControllerDaemon, pki: Pki) -> None:
    target = f"127.0.0.1:{ctl.port}"
    r = CliRunner().invoke(cli, ["--controller", target, *pki.client_flags("admin"),
                                 "pool", "list"], catch_exceptions=False)
    assert r.exit_code == 0 and r.stdout.split()[0] == "NAME", r.stderr
    cert, key = pki.pair("admin")
    env = {"ECNET_TLS_CERT": str(cert), "ECNET_TLS_KEY": str(key), "ECNET_TLS_CA": str(pki.ca)}
    r = CliRunner(env=env).invoke(cli, ["--controller", target, "pool", "list"])
    assert r.exit_code == 0 and r.stdout.split()[0] == "NAME", r.stderr
    # A node's certificate is no admin's: one line, the controller's reason.
    r = CliRunner().invoke(cli, ["--controller", target, *pki.client_flags("node-a"),
                                 "pool", "list"])
    assert r.exit_code == 1 and "may not call" in r.stderr, r.stderr
    r = CliRunner().invoke(cli, ["--controller", target, "--timeout", "3", "pool", "list"])
    assert r.exit_code == 1 and "cannot reach" in r.stderr
    r = CliRunner().invoke(cli, ["--controller", target, "--tls-cert", str(cert), "pool", "list"])
    assert r.exit_code == 2 and "go together" in r.stderr


@pytest.mark.parametrize("listen", ["0.0.0.0:7400", "[::]:7400", "192.0.2.1:7400",
                                    "ctl.example:7400", "127.0.0.1:0,0.0.0.0:7400"])
def test_plaintext_on_a_non_loopback_address_needs_insecure(
        listen: str, pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--listen", listen])
    assert "refusing plaintext" in capsys.readouterr().err
    assert parse_args(["--listen", listen, "--insecure"]).insecure
    assert parse_args(["--listen", listen, *pki.controller_flags()]).tls is not None


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "localhost:7400", "[::1]:7400",
                                    "unix:/run/ecnet/ctl.sock"])
def test_plaintext_on_loopback_or_a_unix_socket_is_allowed(listen: str) -> None:
    assert parse_args(["--listen", listen]).tls is None


def test_tls_flags_go_together(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--tls-cert", str(pki.pair("controller")[0])])
    assert "go together" in capsys.readouterr().err


def _other_group() -> str:
    mine = os.getgid()
    return next(g.gr_name for g in grp.getgrall() if g.gr_gid != mine)


def test_unix_socket_is_0660_with_its_group_in_0750_dirs(tmp_path: Path) -> None:
    sock = tmp_path / "run" / "ecnet" / "ctl.sock"
    group = _other_group()
    old = os.umask(0o022)
    try:
        with running_controller(sqlite_url(tmp_path), "--listen",
                                f"127.0.0.1:0,unix:{sock}", "--socket-group", group):
            st = sock.stat()
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
            assert grp.getgrgid(st.st_gid).gr_name == group
            for d in (sock.parent, sock.parent.parent):
                assert stat.S_IMODE(d.stat().st_mode) == 0o750, d
            # Whoever may open the socket is admin (the file's permissions are the control).
            with grpc.insecure_channel(f"unix:{sock}") as ch:
                pb_grpc.IPAdminStub(ch).CreatePool(
                    pb.CreatePoolRequest(pool=pb.Pool(name="u", policy="dynamic")), timeout=10)
    finally:
        os.umask(old)


def test_exposed_secret_files_and_the_default_onos_password_warn(
        tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ECNET_ONOS_PASSWORD", raising=False)
    key = tmp_path / "key.pem"
    key.write_bytes(pki.pair("controller")[1].read_bytes())
    os.chown(key, -1, grp.getgrnam(_other_group()).gr_gid)
    key.chmod(0o640)
    secret = tmp_path / "onos-password"
    secret.write_text("s3cr3t-onos\n")
    secret.chmod(0o604)   # others, whatever the group
    flags = ["--tls-cert", str(pki.pair("controller")[0]), "--tls-key", str(key),
             "--tls-client-ca", str(pki.ca)]
    caplog.set_level(logging.INFO)
    with running_controller(sqlite_url(tmp_path), *flags, "--onos-url", "http://127.0.0.1:9",
                            "--onos-password-file", str(secret)):
        pass
    text = caplog.text
    assert f"TLS key {key} is accessible to its group or others (mode 0640)" in text
    assert f"ONOS password file {secret} is accessible" in text
    assert "factory default" not in text
    assert "s3cr3t-onos" not in text
    caplog.clear()
    key.chmod(0o600)
    own = tmp_path / "own-group-key.pem"   # Kubernetes' fsGroup secret: 0440, our group
    own.write_bytes(key.read_bytes())
    os.chown(own, -1, os.getegid())
    own.chmod(0o440)
    flags[3] = str(own)
    with running_controller(sqlite_url(tmp_path / "2"), *flags, "--onos-url",
                            "http://127.0.0.1:9"):
        pass
    assert "factory default" in caplog.text
    assert "TLS key" not in caplog.text and "rocks" not in caplog.text


@pytest.mark.parametrize("url,shown", [
    ("postgresql+psycopg://u:pw@db:5432/ipam", "postgresql+psycopg://u:***@db:5432/ipam"),
    ("postgresql+psycopg://u@db/ipam?password=pw&sslmode=require",
     "postgresql+psycopg://u@db/ipam?password=***&sslmode=require"),
    ("postgresql://db/ipam?user=u&PASSWORD=pw", "postgresql://db/ipam?user=u&PASSWORD=***"),
    ("postgresql://u:a@b@db/ipam?sslpassword=pw", "postgresql://u:***@db/ipam?sslpassword=***"),
    ("sqlite:////var/lib/ecnet/ipam.db", "sqlite:////var/lib/ecnet/ipam.db"),
])
def test_database_urls_are_redacted(url: str, shown: str) -> None:
    from ipcontroller.secrets import redact_url
    assert redact_url(url) == shown


def test_the_serving_line_hides_a_query_password(pg_url: str,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    sep = "&" if "?" in pg_url else "?"
    with running_controller(f"{pg_url}{sep}password=hunter2-in-query"):
        pass
    assert "serving listen=" in caplog.text
    assert "hunter2-in-query" not in caplog.text and "password=***" in caplog.text


def test_the_health_listener_serves_probes_and_nothing_else(pki: Pki, tmp_path: Path) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.lab.helpers import free_port
    port = free_port()
    with running_controller(sqlite_url(tmp_path), *pki.controller_flags(),
                            "--health-listen", f"127.0.0.1:{port}"):
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            h = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert h.status == health_pb2.HealthCheckResponse.SERVING
            # a server of its own with the health service alone: nothing else is there
            for call, req in ((pb_grpc.IPAdminStub(ch).DeletePool, pb.DeletePoolRequest(
                    name="p")), (pb_grpc.IPControllerStub(ch).GetTopology,
                                 pb.TopologyRequest())):
                with pytest.raises(grpc.RpcError) as err:
                    call(req, timeout=10)
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED  # type: ignore[attr-defined]


def test_a_missing_tls_file_is_a_clean_start_up_error(pki: Pki, tmp_path: Path) -> None:
    import subprocess
    import sys
    flags = pki.controller_flags()
    flags[3] = str(tmp_path / "missing-key.pem")
    p = subprocess.run([sys.executable, "-m", "ipcontroller.daemon", "--listen", "127.0.0.1:0",
                        "--db", "memory://", *flags], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "missing-key.pem" in p.stderr and "Traceback" not in p.stderr
