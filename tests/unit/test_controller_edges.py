"""The controller's error edge over real gRPC: what a refusal says, and how much of the
caller's input it (and its log line) echoes. SQLite and PostgreSQL stores alike."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from tests.lab.controller import running_controller, sqlite_url


@pytest.fixture(params=["sqlite", "postgres"])
def stubs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    db = (sqlite_url(tmp_path) if request.param == "sqlite"
          else request.getfixturevalue("pg_url"))
    with running_controller(db) as ctl:
        ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}",
                                   options=[("grpc.max_send_message_length", 8 << 20)])
        ctl_stub, admin = pb_grpc.IPControllerStub(ch), pb_grpc.IPAdminStub(ch)
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.90.0.0/24"))
        yield ctl_stub, admin
        ch.close()


def _alloc(cid: str, port_id: str = "") -> pb.AllocateRequest:
    return pb.AllocateRequest(container_id=cid, ifname="eth0", node="n1", pool="p",
                              port_id=port_id,
                              pod=pb.PodRef(namespace="ns", name=f"pod-{cid}", uid=f"u-{cid}"))


def test_a_proposed_port_id_in_use_is_already_exists(stubs: Any) -> None:
    ctl, _ = stubs
    first = ctl.AllocatePort(_alloc("c1"))
    with pytest.raises(grpc.RpcError) as err:
        ctl.AllocatePort(_alloc("c2", port_id=first.port.id))
    assert err.value.code() is grpc.StatusCode.ALREADY_EXISTS
    text = err.value.details()
    assert "DETAIL" not in text and "Key (" not in text and "constraint" not in text, text


def test_a_huge_input_is_cut_in_the_reply_and_the_log(stubs: Any,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    ctl, admin = stubs
    huge = "x" * 1_000_000
    caplog.set_level(logging.INFO)
    calls = [lambda: admin.DeletePool(pb.DeletePoolRequest(name=huge)),
             lambda: admin.Bind(pb.BindRequest(pool=huge, owner="o")),
             lambda: admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr=huge)),
             lambda: ctl.AllocatePort(pb.AllocateRequest(container_id="c", ifname="eth0",
                                                         pool=huge))]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() in (grpc.StatusCode.NOT_FOUND,
                                    grpc.StatusCode.INVALID_ARGUMENT), err.value.code()
        assert len(err.value.details()) < 1024
    assert caplog.records
    assert max(len(r.getMessage()) for r in caplog.records) < 2048
