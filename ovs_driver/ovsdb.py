"""OVSDB client for the Open_vSwitch database: bridges, ports, tunnels, patch ports.

Raw JSON-RPC instead of ovsdbapp, on purpose: one ``transact`` costs ~0.3 ms on the
unix socket here, ovsdbapp's add-port + external_ids ~5.5 ms, and a pod ADD has about
12 ms in total (DESIGN.md, costs table). What we keep from ovsdbapp/os-vif is the
discipline (STYLE.md item 8): every change is ONE transaction, every op result is
checked for "error", preconditions are server-side "wait" ops rather than
read-then-write, and waiting for ``ofport`` is a condition variable fed by a monitor,
never a sleep loop.

The local cache comes from an RFC 7047 "monitor" on the few columns we read; it is
replaced wholesale after every reconnect, so it never mixes two connections' views.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, Self

from ovs_driver.errors import (
    OvsConnectionError,
    OvsError,
    OvsNotFound,
    OvsTimeout,
    OvsTransactionError,
)
from ovs_driver.jsonrpc import JsonRpcConnection

log = logging.getLogger(__name__)

DB = "Open_vSwitch"

# Only what the driver reads. cur_cfg/next_cfg are how ovs-vsctl knows ovs-vswitchd
# has acted on a change (it bumps next_cfg and waits for cur_cfg): that is what lets
# a port that vswitchd silently failed to set up fail fast instead of timing out.
MONITORED: dict[str, list[str]] = {
    "Open_vSwitch": ["bridges", "next_cfg", "cur_cfg"],
    "Bridge": ["name", "ports", "datapath_type", "external_ids", "other_config", "fail_mode"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": [
        "name", "type", "options", "external_ids", "ofport", "mac_in_use", "error",
    ],
}
TUNNEL_KINDS = frozenset({"vxlan", "geneve"})
_NAMED = frozenset({"Bridge", "Port", "Interface"})
_RETRIES = 3


# -- RFC 7047 datum encoding ----------------------------------------------------------

def ovs_uuid(uuid: str) -> list[str]:
    """A reference to an existing row."""
    return ["uuid", uuid]


def named_uuid(name: str) -> list[str]:
    """A reference to a row inserted earlier in the same transaction."""
    return ["named-uuid", name]


def ovs_set(items: Iterable[Any]) -> list[Any]:
    """Always the explicit ["set", [...]] form: a bare atom would also be legal for a
    one-element set, but explicit is never ambiguous with ["uuid", x]."""
    return ["set", list(items)]


def ovs_map(mapping: Mapping[str, Any]) -> list[Any]:
    return ["map", [[k, v] for k, v in sorted(mapping.items())]]


def decode_datum(value: Any) -> Any:
    """Wire datum -> Python: sets become lists, maps dicts, uuids plain strings.

    Without the schema a one-element set and a scalar look alike on the wire; the
    column accessors (:func:`as_optional`, :func:`as_list`) resolve that per column.
    """
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        tag, body = value
        if tag == "set" and isinstance(body, list):
            return [decode_datum(v) for v in body]
        if tag == "map" and isinstance(body, list):
            return {decode_datum(k): decode_datum(v) for k, v in body}
        if tag in ("uuid", "named-uuid") and isinstance(body, str):
            return body
    return value


def as_optional(value: Any) -> Any:
    """A decoded optional column (min 0, max 1): empty set -> None."""
    if isinstance(value, list):
        if not value:
            return None
        if len(value) == 1:
            return value[0]
    return value


def as_list(value: Any) -> list[Any]:
    """A decoded set column: a lone atom is a one-element set."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def as_map(value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return {}


# -- results ------------------------------------------------------------------------

@dataclass(frozen=True)
class InterfaceInfo:
    """One Interface row as the agent needs it (DEL/CHECK/GC work from these)."""

    name: str
    type: str
    ofport: int  # -1 while ovs-vswitchd has assigned none (or failed to open the port)
    mac_in_use: str | None
    external_ids: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass
class _PortSpec:
    bridge: str
    name: str
    iface_type: str
    options: dict[str, str]
    external_ids: dict[str, str]
    mac: str | None = None  # Interface.mac: the address vswitchd gives an internal port


@dataclass
class _Guard:
    """A "wait" op whose failure means our cache was behind the database.

    ``caught_up`` tells when the monitor has delivered the change that made it fail,
    so the retry plans from fresh state; ``fatal`` is the message when a failure is a
    real answer (the bridge is not there) rather than a race.
    """

    op_index: int
    caught_up: Callable[[], bool] | None = None
    fatal: str | None = None


def _where_name(name: str) -> list[list[Any]]:
    return [["name", "==", name]]


def _where_uuid(uuid: str) -> list[list[Any]]:
    return [["_uuid", "==", ovs_uuid(uuid)]]


def _wait(table: str, where: list[list[Any]], columns: list[str],
          rows: list[dict[str, Any]]) -> dict[str, Any]:
    # timeout 0: a precondition, checked once at commit; never parks the transaction.
    return {"op": "wait", "table": table, "where": where, "columns": columns,
            "until": "==", "rows": rows, "timeout": 0}


class OvsdbClient:
    """Thread-safe client of one ovsdb-server; all methods may be called concurrently.

    Reads are answered from the monitor cache; writes are single transactions whose
    effect is visible in the cache when the method returns (read-your-writes), so a
    caller never sees its own change missing.
    """

    def __init__(self, remote: str, timeout: float = 5.0) -> None:
        self.remote = remote
        self.timeout = timeout
        self._cond = threading.Condition()
        self._tables: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in MONITORED}
        self._by_name: dict[str, dict[str, str]] = {t: {} for t in _NAMED}
        self._synced = False
        self._monitor_id: str | None = None
        self._monitor_seq = itertools.count(1)
        self._rpc = JsonRpcConnection(
            remote,
            on_notification=self._on_notification,
            on_connected=self._on_connected,
            on_disconnected=self._on_disconnected,
            connect_timeout=timeout,
        )
        self._rpc.start()
        try:
            self._wait_synced()
        except OvsError:
            self._rpc.close()
            raise

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        self._rpc.close()

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
        bring the given attributes in line; ``None`` leaves an attribute alone.

        With ``wait_vswitchd`` it returns only once ovs-vswitchd has built the bridge
        (its management socket exists then, which ovs-ofctl needs) and raises if
        vswitchd could not (e.g. datapath_type "system" without the kernel module); a
        bridge created by this call is removed again in that case.
        """
        for attempt in range(_RETRIES):
            self._wait_synced()
            ops: list[dict[str, Any]] = [_comment(f"ensure_bridge {name}")]
            guards: list[_Guard] = []
            with self._cond:
                br = self._row_by_name("Bridge", name)
                root = next(iter(self._tables["Open_vSwitch"]), None)
            created = br is None
            if br is None:
                guards.append(_Guard(len(ops), caught_up=lambda: self._has_name("Bridge", name)))
                ops.append(_wait("Bridge", _where_name(name), ["name"], []))
                ops.append({"op": "insert", "table": "Interface", "uuid-name": "iface",
                            "row": {"name": name, "type": "internal"}})
                ops.append({"op": "insert", "table": "Port", "uuid-name": "port",
                            "row": {"name": name, "interfaces": named_uuid("iface")}})
                row: dict[str, Any] = {"name": name, "ports": named_uuid("port")}
                if datapath_type is not None:
                    row["datapath_type"] = datapath_type
                if external_ids:
                    row["external_ids"] = ovs_map(external_ids)
                if fail_mode is not None:
                    row["fail_mode"] = fail_mode
                bridge_op = len(ops)
                ops.append({"op": "insert", "table": "Bridge", "uuid-name": "br", "row": row})
                if root is None:
                    # A fresh database (no `ovs-vsctl init`): Bridge is not a root
                    # table, so without a root row referencing it the commit would
                    # garbage-collect our bridge.
                    guards.append(_Guard(len(ops), caught_up=self._has_root))
                    ops.append(_wait("Open_vSwitch", [], ["bridges"], []))
                    ops.append({"op": "insert", "table": "Open_vSwitch",
                                "row": {"bridges": ovs_set([named_uuid("br")])}})
                else:
                    ops.append({"op": "mutate", "table": "Open_vSwitch",
                                "where": _where_uuid(root),
                                "mutations": [["bridges", "insert",
                                               ovs_set([named_uuid("br")])]]})
            else:
                changes: dict[str, Any] = {}
                if datapath_type is not None and br.get("datapath_type", "") != datapath_type:
                    changes["datapath_type"] = datapath_type
                if fail_mode is not None and as_optional(br.get("fail_mode")) != fail_mode:
                    changes["fail_mode"] = fail_mode
                ids_stale = external_ids is not None and any(
                    as_map(br.get("external_ids")).get(k) != v for k, v in external_ids.items()
                )
                if not changes and not ids_stale:
                    return
                bridge_op = -1
                # Deleted since we looked: plan again (as a create) once the cache knows.
                guards.append(_Guard(len(ops),
                                     caught_up=lambda: not self._has_name("Bridge", name)))
                ops.append(_wait("Bridge", _where_name(name), ["name"], [{"name": name}]))
                if changes:
                    ops.append({"op": "update", "table": "Bridge", "where": _where_name(name),
                                "row": changes})
                if ids_stale and external_ids is not None:
                    ops.append(_set_keys("Bridge", _where_name(name), "external_ids",
                                         external_ids))
            cfg_index = _append_cfg_bump(ops) if root is not None else None
            try:
                result = self._transact(ops, f"ensure_bridge name={name}", guards)
            except _Retry:
                log.debug("ovsdb ensure_bridge retry name=%s attempt=%d", name, attempt)
                continue
            target = _cfg_target(result, cfg_index)
            if created:
                br_uuid = _inserted_uuid(result, bridge_op)
                self._wait_for(partial(self._has_row, "Bridge", br_uuid), self.timeout,
                               f"bridge {name} in the monitor cache")
            else:
                self._wait_for(lambda: self._bridge_matches(name, datapath_type, fail_mode,
                                                            external_ids),
                               self.timeout, f"bridge {name} update in the monitor cache")
            if wait_vswitchd is not None and target is not None:
                self._check_bridge_built(name, target, wait_vswitchd, created)
            log.info("ovsdb bridge ensured name=%s created=%s datapath_type=%s",
                     name, created, datapath_type)
            return
        raise OvsTransactionError(f"ensure_bridge name={name}: lost {_RETRIES} races in a row")

    def delete_bridge(self, name: str) -> bool:
        """Remove the bridge and (by OVSDB garbage collection) its ports; False when
        there was nothing to remove."""
        self._wait_synced()
        with self._cond:
            br_uuid = self._by_name["Bridge"].get(name)
        if br_uuid is None:
            return False
        ops = [
            _comment(f"delete_bridge {name}"),
            {"op": "mutate", "table": "Open_vSwitch", "where": [],
             "mutations": [["bridges", "delete", ovs_set([ovs_uuid(br_uuid)])]]},
            {"op": "delete", "table": "Bridge", "where": _where_uuid(br_uuid)},
        ]
        result = self._transact(ops, f"delete_bridge name={name}")
        if result[2].get("count", 0) == 0:
            return False
        self._wait_for(lambda: br_uuid not in self._tables["Bridge"], self.timeout,
                       f"bridge {name} gone from the monitor cache")
        log.info("ovsdb bridge deleted name=%s", name)
        return True

    def bridge_exists(self, name: str) -> bool:
        self._wait_synced()
        with self._cond:
            return name in self._by_name["Bridge"]

    def datapath_type(self, bridge: str) -> str:
        """"" means the kernel ("system") datapath, where pods need no checksum or MTU
        workarounds; "netdev" is the userspace one (DESIGN.md, The lab)."""
        self._wait_synced()
        with self._cond:
            br = self._row_by_name("Bridge", bridge)
            if br is None:
                raise OvsNotFound(f"bridge {bridge} does not exist")
            return str(br.get("datapath_type", ""))

    def list_ports(self, bridge: str) -> list[str]:
        """Port names on the bridge, without the bridge's own internal port (as
        ``ovs-vsctl list-ports``)."""
        self._wait_synced()
        with self._cond:
            br = self._row_by_name("Bridge", bridge)
            if br is None:
                raise OvsNotFound(f"bridge {bridge} does not exist")
            names = []
            for pu in as_list(br.get("ports")):
                port = self._tables["Port"].get(pu)
                if port is not None and port.get("name") != bridge:
                    names.append(str(port.get("name")))
        return sorted(names)

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
        spec = _PortSpec(bridge, name, iface_type, dict(options or {}), dict(external_ids), mac)
        return self._commit_ports([spec], wait_ofport, f"add_port bridge={bridge} name={name}")[0]

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
        spec = _PortSpec(bridge, name, kind, opts, dict(external_ids or {}))
        return self._commit_ports([spec], wait_ofport, f"add_tunnel bridge={bridge} name={name}")[0]

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
            _PortSpec(bridge_a, port_a, "patch", {"peer": port_b}, {}),
            _PortSpec(bridge_b, port_b, "patch", {"peer": port_a}, {}),
        ]
        a, b = self._commit_ports(
            specs, wait_ofport, f"add_patch_pair {bridge_a}:{port_a}<->{bridge_b}:{port_b}"
        )
        return a, b

    def delete_port(self, bridge: str, name: str) -> bool:
        """Detach and delete; False (not an error: DEL forgives) when it is not there."""
        self._wait_synced()
        with self._cond:
            port_uuid = self._by_name["Port"].get(name)
            br_uuid = self._by_name["Bridge"].get(bridge)
            port = self._tables["Port"].get(port_uuid or "")
            br = self._tables["Bridge"].get(br_uuid or "")
            on_bridge = br is not None and port_uuid in as_list(br.get("ports"))
            owner = self._bridge_of(port_uuid) if port_uuid else None
        if port_uuid is None or port is None:
            return False
        if br_uuid is None or not on_bridge:
            log.warning("ovsdb delete_port: port is on another bridge bridge=%s name=%s owner=%s",
                        bridge, name, owner)
            return False
        ops = [
            _comment(f"delete_port {bridge} {name}"),
            {"op": "mutate", "table": "Bridge", "where": _where_uuid(br_uuid),
             "mutations": [["ports", "delete", ovs_set([ovs_uuid(port_uuid)])]]},
            {"op": "delete", "table": "Port", "where": _where_uuid(port_uuid)},
        ]
        for iu in as_list(port.get("interfaces")):
            ops.append({"op": "delete", "table": "Interface", "where": _where_uuid(iu)})
        result = self._transact(ops, f"delete_port bridge={bridge} name={name}")
        if result[2].get("count", 0) == 0:
            return False  # deleted by someone else between our read and our commit
        self._wait_for(lambda: port_uuid not in self._tables["Port"], self.timeout,
                       f"port {name} gone from the monitor cache")
        log.info("ovsdb port deleted bridge=%s name=%s", bridge, name)
        return True

    def get_interface(self, name: str) -> InterfaceInfo | None:
        self._wait_synced()
        with self._cond:
            row = self._row_by_name("Interface", name)
            return _iface_info(row) if row is not None else None

    def find_interfaces(self, **external_ids: str) -> list[InterfaceInfo]:
        """Interfaces whose external_ids contain all the given pairs. Keys such as
        ``iface-id`` or ``ecnet/pod`` are not identifiers: pass ``**{"iface-id": x}``."""
        self._wait_synced()
        with self._cond:
            found = []
            for row in self._tables["Interface"].values():
                ids = as_map(row.get("external_ids"))
                if all(ids.get(k) == v for k, v in external_ids.items()):
                    found.append(_iface_info(row))
        return sorted(found, key=lambda i: i.name)

    # -- transactions ----------------------------------------------------------------

    def _commit_ports(self, specs: list[_PortSpec], wait_ofport: float | None,
                      what: str) -> list[int]:
        for attempt in range(_RETRIES):
            self._wait_synced()
            ops: list[dict[str, Any]] = [_comment(what)]
            guards: list[_Guard] = []
            iface_refs: list[tuple[int, str]] = []  # (insert op index, or -1 with uuid)
            created: list[bool] = []
            with self._cond:
                for br_name in dict.fromkeys(s.bridge for s in specs):
                    guards.append(_Guard(len(ops), fatal=f"bridge {br_name} does not exist"))
                    ops.append(_wait("Bridge", _where_name(br_name), ["name"],
                                     [{"name": br_name}]))
                for i, spec in enumerate(specs):
                    ref, new = self._plan_port(spec, i, ops, guards)
                    iface_refs.append(ref)
                    created.append(new)
            cfg_index = _append_cfg_bump(ops)
            try:
                result = self._transact(ops, what, guards)
            except _Retry:
                log.debug("ovsdb port plan was stale, retrying what=%r attempt=%d", what, attempt)
                continue
            iface_uuids = [uuid if idx < 0 else _inserted_uuid(result, idx)
                           for idx, uuid in iface_refs]
            target = _cfg_target(result, cfg_index)
            if wait_ofport is None:
                self._wait_for(partial(self._ifaces_written, iface_uuids, specs),
                               self.timeout, f"{what} in the monitor cache")
                return [-1] * len(specs)
            try:
                return self._wait_ofports(iface_uuids, specs, target, wait_ofport)
            except OvsError:
                self._roll_back([s for s, new in zip(specs, created, strict=True) if new], what)
                raise
        raise OvsTransactionError(f"{what}: lost {_RETRIES} races in a row")

    def _plan_port(self, spec: _PortSpec, i: int, ops: list[dict[str, Any]],
                   guards: list[_Guard]) -> tuple[tuple[int, str], bool]:
        """Append the ops for one port (cache lock held); returns how to find its
        Interface uuid after commit and whether this transaction creates it."""
        name = spec.name
        port_uuid = self._by_name["Port"].get(name)
        iface_row: dict[str, Any] = {"type": spec.iface_type,
                                     "options": ovs_map(spec.options),
                                     "external_ids": ovs_map(spec.external_ids)}
        if spec.mac is not None:
            iface_row["mac"] = spec.mac
        if port_uuid is None:
            guards.append(_Guard(len(ops), caught_up=lambda: self._has_name("Port", name)))
            ops.append(_wait("Port", _where_name(name), ["name"], []))
            iface_op = len(ops)
            ops.append({"op": "insert", "table": "Interface", "uuid-name": f"iface{i}",
                        "row": {"name": name, **iface_row}})
            ops.append({"op": "insert", "table": "Port", "uuid-name": f"port{i}",
                        "row": {"name": name, "interfaces": named_uuid(f"iface{i}"),
                                "external_ids": ovs_map(spec.external_ids)}})
            ops.append({"op": "mutate", "table": "Bridge", "where": _where_name(spec.bridge),
                        "mutations": [["ports", "insert", ovs_set([named_uuid(f"port{i}")])]]})
            return (iface_op, ""), True
        owner = self._bridge_of(port_uuid)
        if owner != spec.bridge:
            raise OvsTransactionError(
                f"cannot add port {name} to bridge {spec.bridge}: it exists on bridge {owner}"
            )
        port = self._tables["Port"][port_uuid]
        iface_uuids = as_list(port.get("interfaces"))
        ifaces = [self._tables["Interface"].get(u) for u in iface_uuids]
        if len(iface_uuids) != 1 or ifaces[0] is None or ifaces[0].get("name") != name:
            raise OvsTransactionError(
                f"port {name} exists with other interfaces "
                f"{[r.get('name') if r else u for r, u in zip(ifaces, iface_uuids, strict=True)]}"
            )
        # Same row still there at commit time, or we plan again from fresh state.
        guards.append(_Guard(len(ops), caught_up=lambda: self._by_name["Port"].get(name)
                             != port_uuid))
        ops.append(_wait("Port", _where_name(name), ["_uuid"], [{"_uuid": ovs_uuid(port_uuid)}]))
        ops.append({"op": "update", "table": "Interface", "where": _where_uuid(iface_uuids[0]),
                    "row": iface_row})
        ops.append({"op": "update", "table": "Port", "where": _where_uuid(port_uuid),
                    "row": {"external_ids": ovs_map(spec.external_ids)}})
        return (-1, iface_uuids[0]), False

    def _wait_ofports(self, iface_uuids: list[str], specs: list[_PortSpec],
                      target: int | None, timeout: float) -> list[int]:
        """Wait until vswitchd has acted: ofport > 0, or a verdict (error set, or
        cur_cfg reached our next_cfg without an ofport, as ovs-vsctl decides)."""
        def verdict() -> bool:
            root = next(iter(self._tables["Open_vSwitch"].values()), {})
            done = target is not None and _int(root.get("cur_cfg")) >= target
            for u in iface_uuids:
                row = self._tables["Interface"].get(u)
                if row is None:
                    return False
                if _int(as_optional(row.get("ofport"))) > 0:
                    continue
                # A stale error on a re-added port is judged only after vswitchd has
                # retried it for this transaction (cur_cfg), never before.
                if not done and not (target is None and as_optional(row.get("error"))):
                    return False
            return True

        self._wait_for(verdict, timeout,
                       f"ofport of {','.join(s.name for s in specs)} from ovs-vswitchd")
        ofports = []
        with self._cond:
            for u, spec in zip(iface_uuids, specs, strict=True):
                row = self._tables["Interface"].get(u, {})
                ofport = _int(as_optional(row.get("ofport")))
                if ofport <= 0:
                    error = as_optional(row.get("error")) or (
                        "ovs-vswitchd did not set it up (no ofport; see ovs-vswitchd.log)"
                    )
                    raise OvsTransactionError(
                        f"interface {spec.name} on bridge {spec.bridge}: {error}",
                        error=str(error),
                    )
                ofports.append(ofport)
        return ofports

    def _roll_back(self, specs: list[_PortSpec], what: str) -> None:
        """ADD rolls back (STYLE.md item 9): a port we created and vswitchd rejected
        must not stay behind in the database."""
        if not specs:
            return
        ops: list[dict[str, Any]] = [_comment(f"roll back {what}")]
        with self._cond:
            for spec in specs:
                pu = self._by_name["Port"].get(spec.name)
                if pu is None:
                    continue
                port = self._tables["Port"].get(pu, {})
                ops.append({"op": "mutate", "table": "Bridge", "where": _where_name(spec.bridge),
                            "mutations": [["ports", "delete", ovs_set([ovs_uuid(pu)])]]})
                ops.append({"op": "delete", "table": "Port", "where": _where_uuid(pu)})
                for iu in as_list(port.get("interfaces")):
                    ops.append({"op": "delete", "table": "Interface", "where": _where_uuid(iu)})
        if len(ops) == 1:
            return
        try:
            self._transact(ops, f"roll back {what}")
            log.info("ovsdb rolled back what=%r ports=%s", what, [s.name for s in specs])
        except OvsError as exc:
            log.error("ovsdb roll back failed what=%r: %s", what, exc)

    def _check_bridge_built(self, name: str, target: int, timeout: float, created: bool) -> None:
        def built() -> bool:
            root = next(iter(self._tables["Open_vSwitch"].values()), {})
            return _int(root.get("cur_cfg")) >= target

        self._wait_for(built, timeout, f"ovs-vswitchd to build bridge {name}")
        info = self.get_interface(name)
        if info is not None and info.ofport > 0:
            return
        error = (info.error if info else None) or (
            "ovs-vswitchd could not create its datapath (see ovs-vswitchd.log)"
        )
        if created:
            self.delete_bridge(name)
        raise OvsTransactionError(f"bridge {name}: {error}", error=error)

    def _transact(self, ops: list[dict[str, Any]], what: str,
                  guards: list[_Guard] | None = None) -> list[dict[str, Any]]:
        """Run one transaction; raise on ANY op error (ovsdbapp's check_error defaults
        to off, which is how errors go unnoticed) and on a failed commit."""
        t0 = time.monotonic()
        result = self._rpc.call("transact", [DB, *ops], self.timeout)
        if not isinstance(result, list) or len(result) < len(ops):
            raise OvsTransactionError(f"{what}: malformed transact reply {result!r}")
        for i, r in enumerate(result):
            if not isinstance(r, dict) or "error" not in r:
                continue
            error, details = r.get("error"), r.get("details")
            guard = next((g for g in guards or [] if g.op_index == i), None)
            if guard is not None and error == "timed out":
                if guard.fatal is not None:
                    raise OvsTransactionError(f"{what}: {guard.fatal}", error=str(error),
                                              op_index=i)
                if guard.caught_up is not None:
                    # Usually immediate: the change that beat us is already on its way.
                    self._wait_for(guard.caught_up, min(1.0, self.timeout),
                                   f"{what}: cache catching up", raise_timeout=False)
                raise _Retry()
            op = ops[i] if i < len(ops) else {"op": "commit"}
            raise OvsTransactionError(
                f"{what}: {op.get('op')} {op.get('table', '')} failed: {error}"
                + (f": {details}" if details else ""),
                error=str(error), details=details, op_index=i,
            )
        log.debug("ovsdb transact what=%r ops=%d ms=%.2f", what, len(ops),
                  (time.monotonic() - t0) * 1000)
        return result

    # -- cache -----------------------------------------------------------------------

    def _wait_synced(self) -> None:
        if self._rpc.closed:
            raise OvsConnectionError(f"client closed remote={self.remote}")
        if not self._wait_for(lambda: self._synced, self.timeout, "monitor sync",
                              raise_timeout=False):
            raise OvsConnectionError(
                f"no current view of ovsdb-server remote={self.remote} "
                f"(not connected for {self.timeout}s)"
            )

    def _wait_for(self, predicate: Callable[[], bool], timeout: float, what: str,
                  raise_timeout: bool = True) -> bool:
        """Block until predicate() (evaluated under the cache lock) holds; every
        monitor update wakes the waiters."""
        with self._cond:
            ok = self._cond.wait_for(predicate, timeout)
        if not ok and raise_timeout:
            raise OvsTimeout(f"timed out after {timeout}s waiting for {what} "
                             f"remote={self.remote}")
        return ok

    def _on_connected(self, rpc: JsonRpcConnection) -> None:
        mon_id = f"ecnet-{next(self._monitor_seq)}"
        request = {table: {"columns": cols} for table, cols in MONITORED.items()}
        with self._cond:
            self._synced = False
            self._monitor_id = mon_id
        fut = rpc.request("monitor", [DB, mon_id, request])

        def done(f: Any) -> None:
            exc = f.exception()
            if exc is not None:
                log.warning("ovsdb monitor failed remote=%s monitor=%s: %s",
                            self.remote, mon_id, exc)
                return
            with self._cond:
                if self._monitor_id != mon_id:
                    return
                for table in self._tables.values():
                    table.clear()
                for index in self._by_name.values():
                    index.clear()
                self._apply(f.result())
                self._synced = True
                self._cond.notify_all()
            log.info("ovsdb monitor synced remote=%s monitor=%s bridges=%d interfaces=%d",
                     self.remote, mon_id, len(self._tables["Bridge"]),
                     len(self._tables["Interface"]))

        fut.add_done_callback(done)

    def _on_disconnected(self) -> None:
        with self._cond:
            self._synced = False
            self._monitor_id = None
            self._cond.notify_all()

    def _on_notification(self, method: str, params: Any) -> None:
        if method != "update" or not isinstance(params, list) or len(params) != 2:
            return
        with self._cond:
            if params[0] != self._monitor_id:
                return
            self._apply(params[1])
            self._cond.notify_all()

    def _apply(self, updates: Any) -> None:
        """Apply RFC 7047 <table-updates> (monitor v1: "new" carries every monitored
        column of the row); cache lock held."""
        if not isinstance(updates, dict):
            return
        for table, rows in updates.items():
            cache = self._tables.get(table)
            if cache is None or not isinstance(rows, dict):
                continue
            index = self._by_name.get(table)
            for uuid, change in rows.items():
                old = cache.get(uuid)
                new = change.get("new") if isinstance(change, dict) else None
                old_name = old.get("name") if old is not None else None
                if index is not None and isinstance(old_name, str) and \
                        index.get(old_name) == uuid:
                    del index[old_name]
                if new is None:
                    cache.pop(uuid, None)
                    continue
                row = dict(old or {})
                row.update({c: decode_datum(v) for c, v in new.items()})
                cache[uuid] = row
                if index is not None and "name" in row:
                    index[row["name"]] = uuid

    def _row_by_name(self, table: str, name: str) -> dict[str, Any] | None:
        uuid = self._by_name[table].get(name)
        return self._tables[table].get(uuid) if uuid is not None else None

    def _has_name(self, table: str, name: str) -> bool:
        return name in self._by_name[table]

    def _has_root(self) -> bool:
        return bool(self._tables["Open_vSwitch"])

    def _bridge_of(self, port_uuid: str) -> str | None:
        for br in self._tables["Bridge"].values():
            if port_uuid in as_list(br.get("ports")):
                return str(br.get("name"))
        return None

    def _has_row(self, table: str, uuid: str) -> bool:
        return uuid in self._tables[table]

    def _ifaces_written(self, uuids: list[str], specs: list[_PortSpec]) -> bool:
        for uuid, spec in zip(uuids, specs, strict=True):
            row = self._tables["Interface"].get(uuid)
            if row is None or as_map(row.get("external_ids")) != spec.external_ids or \
                    as_map(row.get("options")) != spec.options:
                return False
        return True

    def _bridge_matches(self, name: str, datapath_type: str | None, fail_mode: str | None,
                        external_ids: Mapping[str, str] | None) -> bool:
        br = self._row_by_name("Bridge", name)
        if br is None:
            return False
        if datapath_type is not None and br.get("datapath_type", "") != datapath_type:
            return False
        if fail_mode is not None and as_optional(br.get("fail_mode")) != fail_mode:
            return False
        ids = as_map(br.get("external_ids"))
        return all(ids.get(k) == v for k, v in (external_ids or {}).items())


class _Retry(Exception):
    """Internal: a precondition failed because our cache was behind; plan again."""


def _comment(text: str) -> dict[str, Any]:
    # Shows up in ovsdb-server's database log (ovsdb-tool show-log), so an operator
    # can tell our transactions from ovs-vsctl's.
    return {"op": "comment", "comment": f"ecnet: {text}"}


def _set_keys(table: str, where: list[list[Any]], column: str,
              pairs: Mapping[str, str]) -> dict[str, Any]:
    """Set some keys of a map column atomically, leaving the others: "insert" never
    overwrites an existing key, so delete those keys first, in the same op."""
    return {"op": "mutate", "table": table, "where": where, "mutations": [
        [column, "delete", ovs_set(sorted(pairs))],
        [column, "insert", ovs_map(pairs)],
    ]}


def _append_cfg_bump(ops: list[dict[str, Any]]) -> int:
    """Ask ovs-vswitchd to acknowledge this transaction (next_cfg += 1, read back);
    returns the index of the select op."""
    ops.append({"op": "mutate", "table": "Open_vSwitch", "where": [],
                "mutations": [["next_cfg", "+=", 1]]})
    ops.append({"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["next_cfg"]})
    return len(ops) - 1


def _cfg_target(result: list[dict[str, Any]], index: int | None) -> int | None:
    if index is None:
        return None
    rows = result[index].get("rows") or []
    return int(rows[0]["next_cfg"]) if rows else None


def _inserted_uuid(result: list[dict[str, Any]], index: int) -> str:
    return str(decode_datum(result[index]["uuid"]))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _iface_info(row: Mapping[str, Any]) -> InterfaceInfo:
    mac = as_optional(row.get("mac_in_use"))
    error = as_optional(row.get("error"))
    return InterfaceInfo(
        name=str(row.get("name", "")),
        type=str(row.get("type", "")),
        ofport=_int(as_optional(row.get("ofport"))),
        mac_in_use=str(mac) if mac is not None else None,
        external_ids=as_map(row.get("external_ids")),
        options=as_map(row.get("options")),
        error=str(error) if error is not None else None,
    )
