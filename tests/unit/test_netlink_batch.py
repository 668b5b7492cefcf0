"""The pod-side netlink batch's encoding (cni.agent.netlink.batch), decoded by pyroute2's
own message classes: an independent reader of the same wire format."""
from __future__ import annotations

import errno
import socket
import struct

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from cni.agent.netlink import batch
from cni.agent.netlink.plan import PodInterfaceSpec, plan_interface


def messages(data: bytes) -> list[bytes]:
    out, off = [], 0
    while off < len(data):
        (length,) = struct.unpack_from("=I", data, off)
        out.append(data[off:off + length])
        off += (length + 3) & ~3
    return out


def decode(cls: type, raw: bytes) -> dict[str, object]:
    msg = cls(raw)
    msg.decode()
    return {"msg": msg, "type": msg["header"]["type"], "flags": msg["header"]["flags"],
            "seq": msg["header"]["sequence_number"],
            **{name: value for name, value in msg["attrs"]}}


def test_the_batch_is_link_then_addresses_then_routes() -> None:
    plan = plan_interface(PodInterfaceSpec(
        netns="/var/run/netns/x", ifname="eth0", host_ifname="tap0123456789a",
        mac="02:aa:bb:cc:dd:ee", addresses=[("10.1.2.3", 24), ("fd00::3", 64)],
        gateways={4: "10.1.2.1", 6: "fd00::1"}, routes=[("10.9.0.0/16", "10.1.2.1")],
        mtu=1450, tx_checksum_off=True, alias="ecnet:network=lab"))
    data, steps = batch.pod_side_batch(plan, index=7, first_seq=10)
    raw = messages(data)
    assert len(raw) == len(steps) == 1 + 2 + len(plan.routes)
    assert [s.seq for s in steps] == list(range(10, 10 + len(raw)))

    link = decode(ifinfmsg, raw[0])
    assert link["type"] == batch.RTM_NEWLINK and link["seq"] == 10
    assert link["msg"]["index"] == 7 and link["msg"]["flags"] & 1 and link["msg"]["change"] & 1
    assert link["IFLA_ADDRESS"] == "02:aa:bb:cc:dd:ee" and link["IFLA_MTU"] == 1450
    # the network's name rides in the same message: a restarted agent re-plugs with it
    assert link["IFLA_IFALIAS"] == "ecnet:network=lab"
    assert steps[0].ok_errnos == ()

    v4, v6 = decode(ifaddrmsg, raw[1]), decode(ifaddrmsg, raw[2])
    assert v4["type"] == v6["type"] == batch.RTM_NEWADDR
    assert v4["flags"] & batch.NLM_F_ACK and v4["flags"] & batch.NLM_F_EXCL
    assert (v4["msg"]["family"], v4["msg"]["prefixlen"], v4["msg"]["index"]) == (
        socket.AF_INET, 24, 7)
    assert v4["IFA_LOCAL"] == v4["IFA_ADDRESS"] == "10.1.2.3"
    assert v6["IFA_ADDRESS"] == "fd00::3" and "IFA_LOCAL" not in v6
    assert v6["msg"]["flags"] == 0x02  # IFA_F_NODAD: usable at once
    assert steps[1].ok_errnos == (errno.EEXIST,)

    routes = [decode(rtmsg, r) for r in raw[3:]]
    by_dst = {(r["msg"]["family"], r.get("RTA_DST"), r["msg"]["dst_len"]): r for r in routes}
    default4 = by_dst[(socket.AF_INET, None, 0)]
    assert default4["RTA_GATEWAY"] == "10.1.2.1" and default4["RTA_OIF"] == 7
    assert default4["msg"]["table"] == 254 and default4["msg"]["proto"] == batch.RTPROT_STATIC
    assert by_dst[(socket.AF_INET, "10.9.0.0", 16)]["RTA_GATEWAY"] == "10.1.2.1"
    assert by_dst[(socket.AF_INET6, None, 0)]["RTA_GATEWAY"] == "fd00::1"


def ack(seq: int, code: int) -> bytes:
    body = struct.pack("=i", -code) + struct.pack("=IHHII", 16, 0, 0, seq, 0)
    return struct.pack("=IHHII", 16 + len(body), batch.NLMSG_ERROR, 0, seq, 0) + body


def test_acks_are_read_per_sequence_number() -> None:
    data = ack(1, 0) + ack(2, errno.EEXIST) + ack(3, errno.ENETUNREACH)
    assert batch.parse_acks(data) == {1: 0, 2: errno.EEXIST, 3: errno.ENETUNREACH}


def test_a_truncated_header_is_an_error() -> None:
    with pytest.raises(ValueError, match="length 4"):
        batch.parse_acks(struct.pack("=IHHII", 4, 2, 0, 1, 0))


def test_a_veth_pair_request_names_both_ends() -> None:
    link = decode(ifinfmsg, batch.veth_add(3, "tap0123456789a", 1450, True, "eth0", 9))
    assert link["type"] == batch.RTM_NEWLINK and link["seq"] == 3
    assert link["flags"] & batch.NLM_F_CREATE and link["flags"] & batch.NLM_F_EXCL
    assert link["msg"]["flags"] & 1 and link["msg"]["change"] & 1  # created up
    assert link["IFLA_IFNAME"] == "tap0123456789a" and link["IFLA_MTU"] == 1450
    info = link["IFLA_LINKINFO"]
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer.get_attr("IFLA_IFNAME") == "eth0" and peer.get_attr("IFLA_MTU") == 1450
    assert peer.get_attr("IFLA_NET_NS_FD") == 9
    down = decode(ifinfmsg, batch.veth_add(4, "ectmp0", 1500, False, "eth1", 9))
    assert down["msg"]["flags"] == 0 and down["msg"]["change"] == 0
