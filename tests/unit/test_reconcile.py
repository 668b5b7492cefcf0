"""The agent's reconcile rules, pure: what `plan` decides from three views of a node, the
two-observation rule, and when a netns counts as gone (never on a guess)."""
from __future__ import annotations

import os
from pathlib import Path

from cni.agent.reconcile import (
    Attachment,
    Confirmations,
    NodeView,
    host_if_for,
    netns_gone,
    plan,
)

PID = "0123456789ab-cdef-4000-8000-000000000000"


def att(cid: str, netns: str, host_if: str = "", port_id: str = PID) -> Attachment:
    return Attachment(cid, "eth0", netns, port_id, f"uid-{cid}", host_if)


def test_plan_sorts_each_attachment_by_what_the_views_say() -> None:
    live_if, lost_if, gone_if = "tap00000000-01", "tap00000000-02", "tap00000000-03"
    ovs = (att("live", "/run/netns/a", live_if),     # all there: nothing to do
           att("lost-veth", "/run/netns/b", lost_if),  # pod alive, veth gone: half-built
           att("gone", "/run/netns/c", gone_if))      # netns gone: stale
    ctl = (att("live", "/run/netns/a"),
           att("no-ovs", "/run/netns/d"),             # pod and veth there, OVS lost it
           att("no-ovs-no-veth", "/run/netns/e", port_id="f" * 36),  # leave alone
           att("gone-no-ovs", "/run/netns/f"),         # rebooted: only the controller knows
           att("unknown", ""))                         # no netns: never a guess
    veths = frozenset({live_if, gone_if, host_if_for(PID)})
    p = plan(NodeView(ovs, ctl, veths, frozenset({"/run/netns/c", "/run/netns/f"})))
    assert [a.container_id for a in p.unplug] == ["lost-veth"]
    assert [a.container_id for a in p.replug] == ["no-ovs"]
    assert sorted(a.container_id for a in p.stale) == ["gone", "gone-no-ovs"]
    # without the controller's view (an older controller): OVSDB and the netns alone
    p = plan(NodeView(ovs, None, veths, frozenset({"/run/netns/c"})))
    assert [a.container_id for a in p.stale] == ["gone"] and p.replug == ()


def test_confirmations_need_two_identical_observations_grace_apart() -> None:
    c = Confirmations(grace=5)
    a, b = att("a", "/x"), att("b", "/y")
    assert c.confirm("stale", [a, b], 0) == []
    assert c.confirm("unplug", [a], 1) == []              # kinds are kept apart
    assert c.confirm("stale", [a, att("b", "/other")], 4) == []   # b changed: over
    assert c.confirm("stale", [a, att("b", "/other")], 5) == [a]
    assert c.confirm("stale", [att("b", "/other")], 8) == []      # a dropped out
    assert c.confirm("stale", [a, att("b", "/other")], 9) == [att("b", "/other")]


def test_netns_gone_only_when_we_can_tell(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.touch()
    assert not netns_gone(str(present))
    assert netns_gone(str(tmp_path / "missing"))
    assert not netns_gone(str(tmp_path / "no-such-dir" / "ns"))   # not visible here
    assert not netns_gone("")
    assert not netns_gone(f"/proc/{os.getpid()}/ns/net")
    assert netns_gone("/proc/999999999/ns/net")
