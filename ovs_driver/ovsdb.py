"""OVSDB client for the Open_vSwitch database: bridges, ports, tunnels, patch ports,
on python-ovs's Idl (one IDL thread per client, ``ovs_driver.idl``).

What ecnet keeps that ovsdbapp does not give by default (STYLE.md item 8):

- Every change is ONE transaction: a port with its external_ids, both patch ends.
- Every failure raises an ``OvsError`` with OVSDB's or ovs-vswitchd's own text.
- Decisions are made on the replica and re-checked by the server at commit:
  ``Row.verify`` on each row a plan rests on (python-ovs sends it as a "wait" op),
  and the unique ``name`` indexes for inserts. Losing such a race means: plan
  again from the caught-up replica (``IdlConnection.transact``).
- Only the columns in ``MONITORED`` are replicated; reads come from the replica.

When a verb is done is a choice per verb. Measured here (tests/bench/ovsdb_bench.py,
2 cores, userspace OVS, veths, medians): a port committed and in the replica ~1.0 ms,
the same until vswitchd has its ofport ~3 ms, so waiting for vswitchd costs ~2 ms a
change; a delete ~0.5 ms.

- ``add_port``/``add_tunnel``/``add_patch_pair`` return once ovs-vswitchd has the
  port (``ofport`` assigned): a pod is reachable then, and a port vswitchd cannot
  open fails the call (told by ``cur_cfg`` reaching the ``next_cfg`` this
  transaction set, as ovs-vsctl does) instead of timing out. Ports the call created
  are removed again on any failure after the commit. ``wait_ofport=None``: once
  committed and in the replica.
- ``ensure_bridge`` returns once vswitchd has built the bridge (``cur_cfg``, and its
  LOCAL port has an ofport), because ovs-ofctl needs its management socket.
- With ``group_commit`` (the node agent's client), concurrent ``add_port`` calls share
  one transaction and concurrent ``delete_port`` calls another (ovs_driver.groupcommit):
  ovs-vswitchd re-plans every port once per transaction, so a burst of attaches costs
  it one pass per batch, not one per pod. Each caller still returns when its own port
  has its ofport, or raises its own error.
- ``delete_port``/``delete_bridge`` return once the rows are gone from the database
  and the replica. They do not wait for vswitchd: no caller reads anything of the
  port afterwards, the name can be reused at once (a new Port row is a new port to
  vswitchd), and vswitchd removes the netdev in the same pass it would be waited
  for.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Self
from uuid import UUID

from ovs_driver.errors import OvsError, OvsNotFound, OvsTransactionError
from ovs_driver.groupcommit import BatchStats, GroupCommit
from ovs_driver.idl import IdlConnection, IdlRow, TxnBuilder, col
from ovs_driver.ports import PortSpec, commit_ports, commit_ports_each, delete_ports
from ovs_driver.rows import (
    InterfaceInfo,
    as_int,
    as_map,
    iface_info,
    optional,
)

log = logging.getLogger(__name__)

DB = "Open_vSwitch"

# Only what the driver reads or writes (every column costs parsing in python-ovs on
# each update). cur_cfg/next_cfg are how ovs-vsctl knows ovs-vswitchd has acted on a
# change (it bumps next_cfg and waits for cur_cfg): that is what lets a port that
# vswitchd failed to set up fail fast instead of timing out. next_cfg is only bumped
# (Transaction increment: a mutate and a select, no replica needed), so it is not
# replicated. Interface.mac is written (a gateway port's MAC), never read.
MONITORED: dict[str, list[str]] = {
    "Open_vSwitch": ["bridges", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type", "external_ids", "fail_mode"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": [
        "name", "type", "options", "external_ids", "ofport", "mac_in_use", "error", "mac",
    ],
}
NAMED = ("Bridge", "Port", "Interface")  # tables with a unique name (and our index on it)
TUNNEL_KINDS = frozenset({"vxlan", "geneve"})


def _one_may_be_the_cause(exc: OvsError) -> bool:
    """A refused transaction may be one port's fault: worth retrying port by port. A
    timeout or a lost connection is everyone's: retried one by one, N callers would wait N
    timeouts."""
    return isinstance(exc, OvsTransactionError)


@dataclass
class _BridgePlan:
    bridge: UUID
    created: bool


class OvsdbClient:
    """Thread-safe client of one ovsdb-server; all methods may be called concurrently.

    Reads are answered from the IDL's replica; writes are single transactions whose
    effect is in the replica when the method returns (read-your-writes), so a caller
    never sees its own change missing. ``timeout`` bounds every wait for the server
    (it may be changed on a live client).
    """

    def __init__(self, remote: str, timeout: float = 5.0, group_commit: bool = False) -> None:
        self.remote = remote
        self.timeout = timeout
        self._conn = IdlConnection(remote, DB, MONITORED, NAMED, timeout)
        self._group = group_commit
        self._attachers: dict[float | None, GroupCommit[PortSpec, int]] = {}
        self._attachers_lock = threading.Lock()
        self._detacher: GroupCommit[tuple[str, str], bool] = GroupCommit(
            self._detach_batch, retry_alone=_one_may_be_the_cause)

    def queued(self) -> int:
        """Attaches and detaches waiting for the next batch (tests wait on it)."""
        with self._attachers_lock:
            attachers = list(self._attachers.values())
        return sum(g.queued() for g in attachers) + self._detacher.queued()

    def batch_stats(self) -> dict[str, BatchStats]:
        """What the group commits did so far ("attach wait=<s>", "detach")."""
        with self._attachers_lock:
            out = {f"attach wait={w}": g.stats for w, g in self._attachers.items()}
        out["detach"] = self._detacher.stats
        return out

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- bridges -------------------------------------------------------------------

    def ensure_bridge(
        self,
        name: str,
        datapath_type: str | None = "netdev",
        external_ids: Mapping[str, str] | None = None,
        fail_mode: str | None = None,
        *,
        wait_vswitchd: float | None = 2.0,
    ) -> None:
        """Create the bridge (with its internal port of the same name) if missing, or
        bring the given attributes in line; ``None`` leaves an attribute alone, and
        ``external_ids`` sets the given keys, leaving the others.

        With ``wait_vswitchd`` it returns only once ovs-vswitchd has built the bridge
        (its management socket exists then, which ovs-ofctl needs) and raises if
        vswitchd could not (e.g. datapath_type "system" without the kernel module); a
        bridge created by this call is removed again in that case.
        """
        what = f"ensure_bridge name={name}"
        plan = partial(self._plan_bridge, name, datapath_type, external_ids, fail_mode)
        done = self._conn.transact(what, plan, self.timeout)
        if done is None:
            return  # already as asked
        created = done.value.created
        if created:
            br_uuid = done.real_uuid(done.value.bridge)
            self._conn.wait_for(lambda: self._conn.row("Bridge", br_uuid) is not None,
                                self.timeout, f"bridge {name} in the replica")
        else:
            self._conn.wait_for(
                lambda: self._bridge_matches(name, datapath_type, fail_mode, external_ids),
                self.timeout, f"bridge {name} update in the replica")
        if wait_vswitchd is not None and done.increment is not None:
            self._check_bridge_built(name, done.increment, wait_vswitchd, created)
        log.info("ovsdb bridge ensured name=%s created=%s datapath_type=%s",
                 name, created, datapath_type)

    def _plan_bridge(self, name: str, datapath_type: str | None,
                     external_ids: Mapping[str, str] | None, fail_mode: str | None,
                     txn: TxnBuilder) -> _BridgePlan | None:
        br = self._conn.by_name("Bridge", name)
        root = self._conn.root()
        if br is None:
            iface = txn.insert("Interface")
            iface.name, iface.type = name, "internal"
            port = txn.insert("Port")
            port.name, port.interfaces = name, [iface]
            br = txn.insert("Bridge")
            br.name, br.ports = name, [port]
            if datapath_type is not None:
                br.datapath_type = datapath_type
            if external_ids:
                br.external_ids = dict(external_ids)
            if fail_mode is not None:
                br.fail_mode = [fail_mode]
            if root is None:
                # A fresh database (no `ovs-vsctl init`): Bridge is not a root table, so
                # without a root row referencing it the commit would garbage-collect it.
                # A second client doing the same loses on maxRows and plans again.
                root = txn.insert("Open_vSwitch")
                root.bridges = [br]
            else:
                root.addvalue("bridges", br)
                txn.increment(root, "next_cfg")
            return _BridgePlan(br.uuid, created=True)
        dp_stale = datapath_type is not None and col(br, "datapath_type") != datapath_type
        fail_stale = fail_mode is not None and optional(col(br, "fail_mode")) != fail_mode
        ids = as_map(col(br, "external_ids"))
        stale_ids = {k: v for k, v in (external_ids or {}).items() if ids.get(k) != v}
        if not dp_stale and not fail_stale and not stale_ids:
            return None
        br.verify("name")  # deleted since we looked: plan again, as a create
        if dp_stale:
            br.datapath_type = datapath_type
        if fail_stale:
            br.fail_mode = [fail_mode]
        for key, value in stale_ids.items():
            br.setkey("external_ids", key, value)  # one mutate: other keys stay
        if root is not None:
            txn.increment(root, "next_cfg")
        return _BridgePlan(br.uuid, created=False)

    def delete_bridge(self, name: str) -> bool:
        """Remove the bridge and (by OVSDB garbage collection) its ports; False when
        there was nothing to remove."""
        def plan(txn: TxnBuilder) -> UUID | None:
            br = self._conn.by_name("Bridge", name)
            root = self._conn.root()
            if br is None or root is None:
                return None
            br.verify("name")  # someone else deleted it first: plan again, find nothing
            root.delvalue("bridges", br)
            return br.uuid

        done = self._conn.transact(f"delete_bridge name={name}", plan, self.timeout)
        if done is None:
            return False
        self._conn.wait_for(lambda: self._conn.row("Bridge", done.value) is None,
                            self.timeout, f"bridge {name} gone from the replica")
        log.info("ovsdb bridge deleted name=%s", name)
        return True

    def bridge_exists(self, name: str) -> bool:
        return self._conn.read(lambda: self._conn.by_name("Bridge", name) is not None,
                               self.timeout)

    def datapath_type(self, bridge: str) -> str:
        """"" means the kernel ("system") datapath, where pods need no checksum or MTU
        workarounds; "netdev" is the userspace one (DESIGN.md, The lab)."""
        return self._conn.read(lambda: str(col(self._bridge(bridge), "datapath_type")),
                               self.timeout)

    def list_ports(self, bridge: str) -> list[str]:
        """Port names on the bridge, without the bridge's own internal port (as
        ``ovs-vsctl list-ports``)."""
        def names() -> list[str]:
            ports = (self._conn.row("Port", u) for u in col(self._bridge(bridge), "ports"))
            return sorted(name for p in ports if p is not None
                          and (name := str(col(p, "name"))) != bridge)

        return self._conn.read(names, self.timeout)

    def _bridge(self, name: str) -> IdlRow:
        br = self._conn.by_name("Bridge", name)
        if br is None:
            raise OvsNotFound(f"bridge {name} does not exist")
        return br

    # -- ports -----------------------------------------------------------------------

    def add_port(
        self,
        bridge: str,
        name: str,
        external_ids: Mapping[str, str],
        iface_type: str = "",
        options: Mapping[str, str] | None = None,
        wait_ofport: float | None = 2.0,
        mac: str | None = None,
    ) -> int:
        """Attach ``name`` to ``bridge`` with its external_ids in one transaction.

        ``mac`` sets the Interface's ``mac`` column, which ovs-vswitchd applies to an
        internal port (a gateway port must own a MAC that other nodes already know).

        May-exist: a port of that name already on the bridge gets its Interface type,
        options and external_ids replaced (a retried ADD must leave the ids of the
        new container, not a mix). With ``wait_ofport`` it returns the OpenFlow port
        number once ovs-vswitchd has one; if vswitchd reports an error the port
        created by this call is deleted again and OvsTransactionError carries the
        error. Returns -1 when not waiting.
        """
        spec = PortSpec(bridge, name, iface_type, dict(options or {}), dict(external_ids), mac)
        if self._group:
            return self._attacher(wait_ofport).submit(spec)
        return commit_ports(self._conn, [spec], wait_ofport,
                            f"add_port bridge={bridge} name={name}", self.timeout)[0]

    def _attacher(self, wait_ofport: float | None) -> GroupCommit[PortSpec, int]:
        """One group commit per wait: ports in one batch are waited for together."""
        with self._attachers_lock:
            group = self._attachers.get(wait_ofport)
            if group is None:
                group = self._attachers[wait_ofport] = GroupCommit(
                    partial(self._attach_batch, wait_ofport), retry_alone=_one_may_be_the_cause)
            return group

    def _attach_batch(self, wait_ofport: float | None,
                      specs: Sequence[PortSpec]) -> list[int | OvsError]:
        what = (f"add_port bridge={specs[0].bridge} name={specs[0].name}" if len(specs) == 1
                else f"add_ports n={len(specs)} names={','.join(s.name for s in specs)}")
        return commit_ports_each(self._conn, specs, wait_ofport, what, self.timeout)

    def add_tunnel(
        self,
        bridge: str,
        name: str,
        kind: str,
        remote_ip: str,
        key: str = "flow",
        extra_options: Mapping[str, str] | None = None,
        external_ids: Mapping[str, str] | None = None,
        wait_ofport: float | None = 2.0,
    ) -> int:
        """A VXLAN/Geneve port; key "flow" lets flows set the VNI per packet
        (``set_field:...->tun_id``), which a per-network overlay needs."""
        if kind not in TUNNEL_KINDS:
            raise ValueError(f"tunnel kind {kind!r} not in {sorted(TUNNEL_KINDS)}")
        opts = {"remote_ip": remote_ip, "key": key, **(extra_options or {})}
        spec = PortSpec(bridge, name, kind, opts, dict(external_ids or {}))
        return commit_ports(self._conn, [spec], wait_ofport,
                            f"add_tunnel bridge={bridge} name={name}", self.timeout)[0]

    def add_patch_pair(
        self,
        bridge_a: str,
        port_a: str,
        bridge_b: str,
        port_b: str,
        wait_ofport: float | None = 2.0,
    ) -> tuple[int, int]:
        """Join two bridges (br-int/br-tun) with both patch ends in one transaction, so
        neither end ever exists without its peer. Returns the two ofports."""
        specs = [
            PortSpec(bridge_a, port_a, "patch", {"peer": port_b}, {}),
            PortSpec(bridge_b, port_b, "patch", {"peer": port_a}, {}),
        ]
        what = f"add_patch_pair {bridge_a}:{port_a}<->{bridge_b}:{port_b}"
        a, b = commit_ports(self._conn, specs, wait_ofport, what, self.timeout)
        return a, b

    def delete_port(self, bridge: str, name: str) -> bool:
        """Detach and delete; False (not an error: DEL forgives) when it is not there."""
        if self._group:
            return self._detacher.submit((bridge, name))
        return self._detach_batch([(bridge, name)])[0]

    def _detach_batch(self, ports: Sequence[tuple[str, str]]) -> list[bool]:
        what = (f"delete_port bridge={ports[0][0]} name={ports[0][1]}" if len(ports) == 1
                else f"delete_ports n={len(ports)}")
        removed = delete_ports(self._conn, ports, what, self.timeout)
        for (bridge, name), gone in zip(ports, removed, strict=True):
            if gone:
                log.debug("ovsdb port deleted bridge=%s name=%s", bridge, name)
        return removed

    def get_interface(self, name: str) -> InterfaceInfo | None:
        def get() -> InterfaceInfo | None:
            row = self._conn.by_name("Interface", name)
            return iface_info(row) if row is not None else None

        return self._conn.read(get, self.timeout)

    def find_interfaces(self, **external_ids: str) -> list[InterfaceInfo]:
        """Interfaces whose external_ids contain all the given pairs. Keys such as
        ``iface-id`` or ``ecnet/pod`` are not identifiers: pass ``**{"iface-id": x}``."""
        def find() -> list[InterfaceInfo]:
            found = []
            for row in self._conn.rows("Interface"):
                ids = col(row, "external_ids")
                if all(ids.get(k) == v for k, v in external_ids.items()):
                    found.append(iface_info(row))
            return found

        return sorted(self._conn.read(find, self.timeout), key=lambda i: i.name)

    def _check_bridge_built(self, name: str, target: int, timeout: float, created: bool) -> None:
        def built() -> bool:
            root = self._conn.root()
            return root is not None and as_int(col(root, "cur_cfg")) >= target

        self._conn.wait_for(built, timeout, f"ovs-vswitchd to build bridge {name}")
        info = self.get_interface(name)
        if info is not None and info.ofport > 0:
            return
        error = (info.error if info else None) or (
            "ovs-vswitchd could not create its datapath (see ovs-vswitchd.log)"
        )
        if created:
            self.delete_bridge(name)
        raise OvsTransactionError(f"bridge {name}: {error}", error=error)

    # -- replica helpers (lock held) ---------------------------------------------------

    def _bridge_matches(self, name: str, datapath_type: str | None, fail_mode: str | None,
                        external_ids: Mapping[str, str] | None) -> bool:
        br = self._conn.by_name("Bridge", name)
        if br is None:
            return False
        if datapath_type is not None and col(br, "datapath_type") != datapath_type:
            return False
        if fail_mode is not None and optional(col(br, "fail_mode")) != fail_mode:
            return False
        ids = as_map(col(br, "external_ids"))
        return all(ids.get(k) == v for k, v in (external_ids or {}).items())
