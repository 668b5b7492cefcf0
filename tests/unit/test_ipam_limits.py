"""Values a database would refuse (or silently keep) are refused by the service first, with
the same InvalidArgument on every store, naming the field and its limit; nothing is stored."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ipam.domain import AllocationRequest, Node, PodIdentity
from ipam.errors import InvalidArgument
from ipam.service import IpamService
from tests.lab.helpers import FakeClock


@pytest.fixture
def svc(store: Any, clock: FakeClock) -> IpamService:
    s = IpamService(store, clock=clock)
    s.create_pool("p", "dynamic")
    s.create_subnet("p", "10.80.0.0/24")
    s.create_pool("f", "fixed")
    s.create_subnet("f", "10.81.0.0/24")
    return s


def _req(**kw: Any) -> AllocationRequest:
    pod = kw.pop("pod", PodIdentity("ns", "pod", "uid"))
    base: dict[str, Any] = dict(container_id="c1", ifname="eth0", pool="p", node="n1")
    base.update(kw)
    return AllocationRequest(pod=pod, **base)


BIG = (1 << 31)

CASES: list[tuple[str, Callable[[IpamService], object], tuple[str, ...]]] = [
    ("ifname 16", lambda s: s.allocate(_req(ifname="e" * 16)), ("ifname", "15")),
    ("container id", lambda s: s.allocate(_req(container_id="c" * 129)),
     ("container id", "128")),
    ("pod uid", lambda s: s.allocate(_req(pod=PodIdentity("ns", "n", "u" * 65))),
     ("pod uid", "64")),
    ("pod name", lambda s: s.allocate(_req(pod=PodIdentity("ns", "n" * 254, "u"))),
     ("pod name", "253")),
    ("pod namespace", lambda s: s.allocate(_req(pod=PodIdentity("n" * 254, "n", "u"))),
     ("pod namespace", "253")),
    ("node", lambda s: s.allocate(_req(node="n" * 254)), ("node", "253")),
    ("netns", lambda s: s.allocate(_req(netns="/" * 4097)), ("netns", "4096")),
    ("hostname", lambda s: s.allocate(_req(hostname="h" * 254)), ("hostname", "253")),
    ("owner given", lambda s: s.allocate(_req(pool="f", owner="o" * 254)), ("owner", "253")),
    ("owner derived", lambda s: s.allocate(_req(pool="f", pod=PodIdentity(
        "n" * 200, "m" * 200, "u"))), ("owner", "253")),
    ("quarantine", lambda s: s.create_pool("q", "dynamic", quarantine_seconds=BIG),
     ("quarantine", str(BIG - 1))),
    ("retention", lambda s: s.create_pool("r", "sticky", retention_seconds=BIG),
     ("retention", str(BIG - 1))),
    ("negative quarantine", lambda s: s.create_pool("q", "dynamic", quarantine_seconds=-1),
     ("quarantine", "0..")),
    ("product type", lambda s: s.create_pool("t", "dynamic", product_type="x" * 64),
     ("product type", "63")),
    ("group", lambda s: s.create_pool("g", "sticky", group="g" * 254), ("group", "253")),
    ("bind owner", lambda s: s.bind("f", "o" * 254), ("owner", "253")),
    ("bind hostname", lambda s: s.bind("f", "o", hostname="h" * 254), ("hostname", "253")),
    ("reserve note", lambda s: s.reserve("p", ["10.80.0.9"], note="n" * 1025),
     ("note", "1024")),
    ("namespace default", lambda s: s.set_namespace_default("n" * 254, "p"),
     ("namespace", "253")),
    ("exclusion other family", lambda s: s.create_subnet("p", "10.82.0.0/24",
                                                         excludes=["fd00::/120"]),
     ("fd00::/120",)),
    ("gateway network", lambda s: s.create_subnet("p", "10.83.0.0/24", gateway="10.83.0.0"),
     ("network or broadcast",)),
    ("gateway broadcast", lambda s: s.create_subnet("p", "10.83.0.0/24",
                                                    gateway="10.83.0.255"),
     ("network or broadcast",)),
    ("gateway v6 anycast", lambda s: s.create_subnet("p", "fd83::/64", gateway="fd83::"),
     ("network or broadcast",)),
    ("node name", lambda s: s.register_node(Node("n" * 254, "192.0.2.1")),
     ("node name", "253")),
    ("node datapath", lambda s: s.register_node(Node("n1", "192.0.2.1", datapath="bogus")),
     ("datapath", "standalone")),
    ("node gateway cidr", lambda s: s.register_node(Node("n1", "192.0.2.1",
                                                         gateway_cidrs=("not-a-cidr",))),
     ("gateway cidr",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_refused_with_field_and_limit(svc: IpamService,
                                      case: tuple[str, Callable[[IpamService], object],
                                                  tuple[str, ...]]) -> None:
    _, call, words = case
    before = (svc.list_ports(), [p.name for p, _, _ in svc.list_pools()],
              [s.cidr for s, _, _ in svc.list_subnets()], svc.list_nodes())
    with pytest.raises(InvalidArgument) as err:
        call(svc)
    for w in words:
        assert w in str(err.value), str(err.value)
    assert len(str(err.value)) < 300
    after = (svc.list_ports(), [p.name for p, _, _ in svc.list_pools()],
             [s.cidr for s, _, _ in svc.list_subnets()], svc.list_nodes())
    assert after == before


def test_values_at_the_limit_are_stored_on_every_store(svc: IpamService) -> None:
    a = svc.allocate(_req(ifname="e" * 15, container_id="c" * 128, node="n" * 253,
                          pod=PodIdentity("n" * 253, "m" * 253, "u" * 64),
                          hostname="h" * 253))
    port, _, _ = svc.get_port("c" * 128, "e" * 15)
    assert port.id == a.port.id and port.node == "n" * 253
    svc.create_pool("q", "dynamic", quarantine_seconds=BIG - 1)
    assert svc.get_pool("q").quarantine_seconds == BIG - 1
    svc.create_subnet("p", "10.84.0.0/31", gateway="10.84.0.1")   # /31: both usable
    n = svc.register_node(Node("n1", "192.0.2.1", datapath="onos",
                               gateway_cidrs=("192.168.1.7/24",)))
    assert n.gateway_cidrs == ("192.168.1.7/24",)


def test_ports_list_in_pages_with_a_cursor(svc: IpamService, clock: FakeClock) -> None:
    made = []
    for i in range(7):
        made.append(svc.allocate(_req(container_id=f"c{i}")).port.id)
        if i % 3 == 0:
            clock.now += 1        # some share a created_at: the id breaks the tie
    seen: list[str] = []
    token = ""
    while True:
        rows, token = svc.list_ports_page(limit=3, page_token=token)
        assert len(rows) <= 3
        seen += [p.id for p, _ in rows]
        if not token:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 7
    with pytest.raises(InvalidArgument, match="page token"):
        svc.list_ports_page(page_token="not-a-token")
