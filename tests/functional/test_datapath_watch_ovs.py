"""The standalone datapath on a real private userspace OVS, fed by WatchTopology from a
real gRPC server (tests/fakes/topology_server.py): a delta changes exactly the flows of
what it touched, the rest of both tables stays as it was. Flows are read back with
``ovs-ofctl dump-flows``, never through the code under test."""
from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from datapath import DatapathSettings, StandaloneDatapath
from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ovs_driver import OvsdbClient
from tests.fakes.topology_server import TopologyServer, TopologyState
from tests.lab.ovs import PrivateOvs, private_ovs  # noqa: F401 - fixtures are used by name
from tests.unit.test_datapath_loop import FakeHost

pytestmark = [pytest.mark.root, pytest.mark.ovs]

WAIT = 60.0


def dump(ovs: PrivateOvs, bridge: str) -> set[str]:
    """The bridge's flows without counters, one normalised string each."""
    out = subprocess.run(["ovs-ofctl", "--no-stats", "--no-names", "dump-flows",
                          f"unix:{ovs.rundir}/{bridge}.mgmt"],
                         capture_output=True, text=True, check=True).stdout
    return {line.strip() for line in out.splitlines() if "actions=" in line}


def wait_for(cond: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def node(name: str, state: str = "ready") -> pb.TopologyChange:
    return pb.TopologyChange(node=pb.NodeInfo(name=name, underlay_ip=f"172.31.0.{name[1:]}",
                                              state=state))


def port(pid: str, host: str, n: int) -> pb.TopologyChange:
    return pb.TopologyChange(port=pb.RemotePort(
        port_id=pid, mac=f"0a:00:00:00:00:{n:02x}", ips=[f"10.70.0.{n}"], node=host))


@pytest.fixture
def watched(private_ovs: PrivateOvs) -> Iterator[tuple[TopologyState, PrivateOvs]]:  # noqa: F811
    st = TopologyState()
    st.commit(node("h1"), node("h2"), node("h3"),
              pb.TopologyChange(subnet=pb.Subnet(id="s", cidr="10.70.0.0/24",
                                                 gateway="10.70.0.1")))
    st.commit(*(port(f"p{i}", "h2" if i % 2 else "h3", i) for i in range(2, 42)))
    srv = TopologyServer(st)
    channel = grpc.insecure_channel(srv.target)
    stop = threading.Event()
    with OvsdbClient(private_ovs.remote) as ovsdb:
        ovsdb.ensure_bridge("br-int")
        dp = StandaloneDatapath(
            DatapathSettings(node="h1", ovs_rundir=private_ovs.rundir, interval=0.2,
                             controller=srv.target),
            ovsdb, pb_grpc.IPControllerStub(channel), stop, host=FakeHost())
        dp.setup()
        thread = dp.start()
        try:
            yield st, private_ovs
        finally:
            stop.set()
            thread.join(timeout=WAIT)
            channel.close()
            srv.stop()
    assert not thread.is_alive()


def test_a_delta_changes_exactly_its_own_flows_in_ovs(
        watched: tuple[TopologyState, PrivateOvs]) -> None:
    st, ovs = watched
    # 40 remote MACs: 40 unicast + 40 ARP answers + probe + default on br-int;
    # 40 MAC -> tunnel + 2 tunnel -> br-int + drop on br-tun.
    wait_for(lambda: len(dump(ovs, "br-int")) == 82 and len(dump(ovs, "br-tun")) == 43,
             "the snapshot's flows")
    int0, tun0 = dump(ovs, "br-int"), dump(ovs, "br-tun")

    st.commit(port("new", "h2", 100))
    wait_for(lambda: len(dump(ovs, "br-int")) == 84 and len(dump(ovs, "br-tun")) == 44,
             "the new port's flows")
    int1, tun1 = dump(ovs, "br-int"), dump(ovs, "br-tun")
    assert int0 < int1 and tun0 < tun1
    added_int, added_tun = int1 - int0, tun1 - tun0
    assert len(added_int) == 2 and all("0a:00:00:00:00:64" in f or "10.70.0.100" in f
                                       for f in added_int)
    assert len(added_tun) == 1 and "dl_dst=0a:00:00:00:00:64" in next(iter(added_tun))

    st.commit(port("new", "h3", 100))           # moved: only its tunnel flow changes
    wait_for(lambda: dump(ovs, "br-tun") != tun1, "the moved port's tunnel flow")
    tun2 = dump(ovs, "br-tun")
    assert dump(ovs, "br-int") == int1
    assert len(tun1 - tun2) == 1 and len(tun2 - tun1) == 1
    (gone,), (came,) = tun1 - tun2, tun2 - tun1
    assert "0a:00:00:00:00:64" in gone and "0a:00:00:00:00:64" in came

    st.commit(pb.TopologyChange(port_removed="new"))
    wait_for(lambda: dump(ovs, "br-tun") == tun0, "the removed port's flows gone")
    wait_for(lambda: dump(ovs, "br-int") == int0, "the removed port's br-int flows gone")

    st.commit(node("h3", state="stale"))        # a node down: its tunnel and its 20 ports
    wait_for(lambda: len(dump(ovs, "br-tun")) == 22, "h3's flows gone")
    tun3, int3 = dump(ovs, "br-tun"), dump(ovs, "br-int")
    assert tun3 < tun0 and len(int0 - int3) == 40 and int3 < int0
