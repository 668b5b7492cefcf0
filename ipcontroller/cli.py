"""`ipctl`: the network admin's CLI for the IP controller (gRPC service IPAdmin).

Human tables by default, `-o json` for scripts. Any failure is exit 1 with exactly one line on
stderr (`ipctl: error: ...`) and never a traceback, so wrappers can grep it; usage errors keep
click's exit 2. The global options (`--controller`, `-o`, `--timeout`) are also accepted after
the subcommand, because that is how people type `ipctl port list -o json`.
"""
from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from ecnet_api.v1 import ecnet_pb2 as pb

from .ipctl_client import ClientTls, IpctlError, IpctlSettings
from .ipctl_output import Column, emit, emit_done, emit_fields, print_json, print_table
from .ipctl_repair import confirm_and_apply

DEFAULT_CONTROLLER = "127.0.0.1:7400"
OUTPUTS = ("table", "json")
# Ports asked for per ListPorts call: replies stay far below gRPC's 4 MB limit.
PORT_PAGE = 1000


USAGE_COLS: list[Column] = [
    ("TOTAL", lambda u: u.total), ("USED", lambda u: u.used), ("RESERVED", lambda u: u.reserved),
    ("QUARANTINED", lambda u: u.quarantined), ("FREE", lambda u: u.free),
]


def _of_usage(cols: Sequence[Column]) -> list[Column]:
    """Reuse the usage columns on messages that carry a `usage` field."""
    def via_usage(get: Callable[[Any], object]) -> Callable[[Any], object]:
        return lambda m: get(m.usage)
    return [(title, via_usage(get)) for title, get in cols]


POOL_COLS: list[Column] = [
    ("NAME", lambda p: p.pool.name), ("POLICY", lambda p: p.pool.policy),
    ("SUBNETS", lambda p: p.subnets),
    *_of_usage([*USAGE_COLS, ("BOUND", lambda u: u.bound)]),
]
SUBNET_COLS: list[Column] = [
    ("ID", lambda s: s.id[:8]), ("POOL", lambda s: s.pool), ("CIDR", lambda s: s.cidr),
    ("GATEWAY", lambda s: s.gateway), *_of_usage(USAGE_COLS),
]
PORT_COLS: list[Column] = [
    ("ID", lambda p: p.id[:11]), ("POOL", lambda p: p.pool),
    ("IPS", lambda p: ",".join(i.address for i in p.ips)), ("MAC", lambda p: p.mac),
    ("NODE", lambda p: p.node),
    ("POD", lambda p: f"{p.pod.namespace}/{p.pod.name}" if p.pod.name else ""),
    ("CONTAINER", lambda p: p.container_id[:12]), ("STATE", lambda p: p.state),
    ("OWNER", lambda p: p.owner),
]
NODE_COLS: list[Column] = [
    ("NAME", lambda n: n.name), ("UNDERLAY IP", lambda n: n.underlay_ip),
    ("GATEWAY", lambda n: n.gateway), ("DATAPATH", lambda n: n.datapath),
    ("STATE", lambda n: n.state), ("LAST SEEN", lambda n: n.last_seen),
]


# ---------------------------------------------------------------- click
class IpctlGroup(click.Group):
    """Root group: whatever escapes a command becomes one `ipctl: error:` line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except Exception as exc:  # noqa: BLE001 - the promise is "never a traceback"
            # Every failure a user can cause leaves a command as an IpctlError: this is a
            # bug, and says so rather than passing for the user's mistake.
            raise IpctlError(f"internal error: {type(exc).__name__}: {exc}") from None


pass_settings = click.make_pass_decorator(IpctlSettings)


@click.group(cls=IpctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--controller", envvar="ECNET_CONTROLLER", default=DEFAULT_CONTROLLER,
              show_default=True, metavar="HOST:PORT",
              help="IP controller address (env ECNET_CONTROLLER)")
@click.option("-o", "--output", type=click.Choice(OUTPUTS), default="table", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, metavar="SECONDS", help="per-call deadline")
@click.option("--tls-cert", envvar="ECNET_TLS_CERT", default="", metavar="FILE",
              help="client certificate, CN admin:<name> (env ECNET_TLS_CERT); with --tls-key "
                   "and --tls-ca the call uses mutual TLS")
@click.option("--tls-key", envvar="ECNET_TLS_KEY", default="", metavar="FILE",
              help="its private key (env ECNET_TLS_KEY)")
@click.option("--tls-ca", envvar="ECNET_TLS_CA", default="", metavar="FILE",
              help="CA that signed the controller's certificate (env ECNET_TLS_CA)")
@click.pass_context
def cli(ctx: click.Context, controller: str, output: str, timeout: float,
        tls_cert: str, tls_key: str, tls_ca: str) -> None:
    """Manage ecnet pools, subnets, ports, bindings, nodes and ONOS sync."""
    given = [bool(tls_cert), bool(tls_key), bool(tls_ca)]
    if any(given) and not all(given):
        raise click.UsageError("--tls-cert, --tls-key and --tls-ca go together")
    tls = ClientTls(tls_cert, tls_key, tls_ca) if all(given) else None
    settings = IpctlSettings(controller, output, timeout, tls)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


# ------------------------------------------------------------------ pools
@cli.group()
def pool() -> None:
    """IP pools (one policy each: fixed, sticky, dynamic)."""


@pool.command("create")
@click.argument("name")
@click.option("--policy", type=click.Choice(["dynamic", "sticky", "fixed"]), required=True)
@click.option("--quarantine", type=click.IntRange(min=0), default=None, metavar="SECONDS",
              help="dynamic: how long a freed address rests (controller default 60)")
@click.option("--retention", type=click.IntRange(min=0), default=0, metavar="SECONDS",
              help="sticky: how long an idle member keeps its IP (0 = until released)")
@click.option("--mtu", type=click.IntRange(min=0), default=0, help="0 = agent default")
@click.option("--product-type", default="", help="product type served ('' = the policy)")
@click.option("--group", default="", help="sticky: the group owning this pool")
@pass_settings
def pool_create(s: IpctlSettings, name: str, policy: str, quarantine: int | None, retention: int,
                mtu: int, product_type: str, group: str) -> None:
    """Create a pool."""
    p = pb.Pool(name=name, policy=policy, retention_seconds=retention, mtu=mtu,
                product_type=product_type, group=group)
    if quarantine is not None:  # unset means "controller default", 0 means "no quarantine"
        p.quarantine_seconds = quarantine
    r = s.call("CreatePool", pb.CreatePoolRequest(pool=p))
    emit_done(s, r.pool, f"pool {r.pool.name} created ({r.pool.policy})")


@pool.command("list")
@pass_settings
def pool_list(s: IpctlSettings) -> None:
    """Pools with their address counts."""
    emit(s, s.call("ListPools", pb.ListPoolsRequest()).pools, POOL_COLS)


@pool.command("show")
@click.argument("name")
@pass_settings
def pool_show(s: IpctlSettings, name: str) -> None:
    """One pool, its settings and its subnets with usage."""
    r = s.call("GetPool", pb.GetPoolRequest(name=name))
    if s.output == "json":
        print_json(r)
        return
    p, u = r.pool.pool, r.pool.usage
    quarantine = p.quarantine_seconds if p.HasField("quarantine_seconds") else "default"
    emit_fields(s, r, [
        ("name", p.name), ("policy", p.policy), ("quarantine", quarantine),
        ("retention", p.retention_seconds), ("mtu", p.mtu or "agent default"),
        ("product type", p.product_type), ("group", p.group), ("subnets", r.pool.subnets),
        ("total", u.total), ("used", u.used), ("reserved", u.reserved),
        ("quarantined", u.quarantined), ("free", u.free), ("bound", u.bound),
    ])
    if r.subnets:
        click.echo()
        print_table(r.subnets, [*SUBNET_COLS, ("EXCLUDES", lambda x: ",".join(x.excludes))])


@pool.command("delete")
@click.argument("name")
@pass_settings
def pool_delete(s: IpctlSettings, name: str) -> None:
    """Delete a pool."""
    emit_done(s, s.call("DeletePool", pb.DeletePoolRequest(name=name)), f"pool {name} deleted")


@cli.command("usage")
@pass_settings
def usage(s: IpctlSettings) -> None:
    """Totals per pool: used, reserved, quarantined, free, bound."""
    emit(s, s.call("ListPools", pb.ListPoolsRequest()).pools, POOL_COLS)


# ---------------------------------------------------------------- subnets
@cli.group()
def subnet() -> None:
    """Subnets of a pool (a pool grows by adding one)."""


@subnet.command("create")
@click.argument("pool_name", metavar="POOL")
@click.argument("cidr")
@click.option("--gateway", default="", metavar="IP", help="default: the first usable address")
@click.option("--exclude", multiple=True, metavar="RANGE_OR_IP",
              help="an address or a range a-b to keep out (repeatable)")
@pass_settings
def subnet_create(s: IpctlSettings, pool_name: str, cidr: str, gateway: str,
                  exclude: tuple[str, ...]) -> None:
    """Add CIDR to POOL."""
    r = s.call("CreateSubnet", pb.CreateSubnetRequest(pool=pool_name, cidr=cidr,
                                                      gateway=gateway, excludes=list(exclude)))
    emit_done(s, r.subnet, f"subnet {r.subnet.cidr} created in pool {pool_name} "
                           f"(gateway {r.subnet.gateway or '-'}, id {r.subnet.id[:8]})")


@subnet.command("list")
@click.option("--pool", "pool_name", default="", metavar="POOL")
@pass_settings
def subnet_list(s: IpctlSettings, pool_name: str) -> None:
    """Subnets with their address counts."""
    emit(s, s.call("ListSubnets", pb.ListSubnetsRequest(pool=pool_name)).subnets, SUBNET_COLS)


@subnet.command("show")
@click.argument("cidr_or_id")
@pass_settings
def subnet_show(s: IpctlSettings, cidr_or_id: str) -> None:
    """One subnet by CIDR or id (prefix of 8+ characters): settings and usage."""
    text = cidr_or_id.strip()
    subnets = s.call("ListSubnets", pb.ListSubnetsRequest()).subnets
    want = str(ipaddress.ip_network(text, strict=False)) if _is_network(text) else ""
    found = [x for x in subnets if x.id == text or (want and x.cidr == want)]
    if not found and len(text) >= 8:
        found = [x for x in subnets if x.id.startswith(text)]
    if len(found) != 1:
        raise IpctlError(f"subnet {text!r} "
                         + ("does not exist" if not found else "is ambiguous"))
    x, u = found[0], found[0].usage
    emit_fields(s, x, [
        ("id", x.id), ("pool", x.pool), ("cidr", x.cidr), ("gateway", x.gateway),
        # No "network id": the ONOS network belongs to the pool, and the controller never
        # sends one with a subnet (Subnet.network_id of the API stays empty).
        ("excludes", ",".join(x.excludes) or "-"),
        ("total", u.total), ("used", u.used), ("reserved", u.reserved),
        ("quarantined", u.quarantined), ("free", u.free),
    ])


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


@subnet.command("delete")
@click.argument("cidr_or_id")
@pass_settings
def subnet_delete(s: IpctlSettings, cidr_or_id: str) -> None:
    """Delete a subnet by CIDR or by id."""
    req = (pb.DeleteSubnetRequest(cidr=cidr_or_id) if _is_network(cidr_or_id)
           else pb.DeleteSubnetRequest(id=cidr_or_id))
    emit_done(s, s.call("DeleteSubnet", req), f"subnet {cidr_or_id} deleted")


# ------------------------------------------------------------------ ports
@cli.group()
def port() -> None:
    """Ports (IP + MAC) handed to pods or held by bindings."""


@port.command("list")
@click.option("--pool", "pool_name", default="", metavar="POOL")
@click.option("--node", default="", metavar="NODE")
@click.option("--state", default="", metavar="STATE",
              help="e.g. active or idle (the controller validates it)")
@click.option("--limit", type=click.IntRange(min=0), default=0, help="0 = all of them")
@pass_settings
def port_list(s: IpctlSettings, pool_name: str, node: str, state: str, limit: int) -> None:
    """Ports, optionally filtered (fetched page by page: any number of them)."""
    emit(s, list_ports(s, pool=pool_name, node=node, state=state, limit=limit), PORT_COLS)


def list_ports(s: IpctlSettings, *, pool: str = "", node: str = "", state: str = "",
               limit: int = 0) -> list[pb.Port]:
    ports: list[pb.Port] = []
    token = ""
    while True:
        want = min(limit - len(ports), PORT_PAGE) if limit else PORT_PAGE
        r = s.call("ListPorts", pb.ListPortsRequest(pool=pool, node=node, state=state,
                                                    limit=want, page_token=token))
        ports += r.ports
        token = r.next_page_token
        if not token or (limit and len(ports) >= limit):
            break
    return ports


PORT_ID_LENGTH = 36  # the controller's port ids are lower-case uuid4s


def resolve_port_id(s: IpctlSettings, prefix: str) -> str:
    """The full id of the one port whose id starts with `prefix` (the tables show 11
    characters, the host interface's tap<id[:11]> as many). Two or more: refused, naming them,
    since releasing the wrong pod's address is what this command must never do. None: the
    prefix as given, for the controller to say it does not exist."""
    if len(prefix) >= PORT_ID_LENGTH:
        return prefix  # a whole id (ids are uuid4s) names one port or none: nothing to list
    found = [p for p in list_ports(s) if p.id.startswith(prefix)]
    if any(p.id == prefix for p in found) or not found:
        return prefix
    if len(found) == 1:
        return found[0].id
    shown = "; ".join(f"{p.id} (pool {p.pool}, {','.join(i.address for i in p.ips)}"
                      + (f", pod {p.pod.namespace}/{p.pod.name}" if p.pod.name else "") + ")"
                      for p in found[:10])
    more = f" and {len(found) - 10} more" if len(found) > 10 else ""
    raise IpctlError(f"port prefix {prefix!r} is ambiguous: {len(found)} ports match: "
                     f"{shown}{more}; give more of the id")


@port.command("release")
@click.argument("port_id", metavar="PORT")
@click.option("--dry-run", is_flag=True, help="print what would be released, change nothing")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@pass_settings
def port_release(s: IpctlSettings, port_id: str, dry_run: bool, yes: bool) -> None:
    """Release PORT (its id, or a prefix of it that names one port, e.g. the 11 characters
    `port list` shows) whose DEL never came, by its pool's policy: a dynamic port is freed, a
    bound one keeps its binding but leaves its pod."""
    port_id = resolve_port_id(s, port_id)
    confirm_and_apply(
        s, f"port {port_id}",
        lambda dry: [s.call("ReclaimPort", pb.ReclaimPortRequest(
            port_id=port_id, dry_run=dry)).released],
        yes=yes, dry_run=dry_run)


# ---------------------------------------------------- reservations, bindings
@cli.command("reserve")
@click.argument("pool_name", metavar="POOL")
@click.argument("addresses", metavar="ADDRESS...", nargs=-1, required=True)
@click.option("--note", default="", help="why (kept with the reservation)")
@pass_settings
def reserve(s: IpctlSettings, pool_name: str, addresses: tuple[str, ...], note: str) -> None:
    """Keep addresses of POOL out of allocation."""
    r = s.call("Reserve", pb.ReserveRequest(pool=pool_name, addresses=list(addresses),
                                            note=note))
    emit_done(s, r, f"{r.changed} address(es) reserved in pool {pool_name}")


@cli.command("unreserve")
@click.argument("pool_name", metavar="POOL")
@click.argument("addresses", metavar="ADDRESS...", nargs=-1, required=True)
@pass_settings
def unreserve(s: IpctlSettings, pool_name: str, addresses: tuple[str, ...]) -> None:
    """Give reserved addresses back to allocation."""
    r = s.call("Reserve", pb.ReserveRequest(pool=pool_name, addresses=list(addresses),
                                            unreserve=True))
    emit_done(s, r, f"{r.changed} address(es) unreserved in pool {pool_name}")


@cli.command("bind")
@click.argument("pool_name", metavar="POOL")
@click.argument("owner")
@click.option("--ip", default="", metavar="IP", help="the address to pin (default: any free)")
@click.option("--hostname", default="", metavar="H")
@pass_settings
def bind(s: IpctlSettings, pool_name: str, owner: str, ip: str, hostname: str) -> None:
    """Pin an IP to OWNER in a fixed or sticky pool, ahead of its first pod."""
    r = s.call("Bind", pb.BindRequest(pool=pool_name, owner=owner, ip=ip, hostname=hostname))
    addrs = ", ".join(i.address for i in r.port.ips) or "-"
    emit_done(s, r.port, f"{owner} bound to {addrs} in pool {pool_name} (port {r.port.id[:11]})")


def _unbind(s: IpctlSettings, pool_name: str, owner: str, verb: str) -> None:
    r = s.call("Unbind", pb.UnbindRequest(pool=pool_name, owner=owner))
    text = (f"{owner} {verb} in pool {pool_name}" if r.found
            else f"{owner} has no binding in pool {pool_name}; nothing to do")
    emit_done(s, r, text)


@cli.command("unbind")
@click.argument("pool_name", metavar="POOL")
@click.argument("owner")
@pass_settings
def unbind(s: IpctlSettings, pool_name: str, owner: str) -> None:
    """Free OWNER's bound IP (refused while a pod uses it)."""
    _unbind(s, pool_name, owner, "unbound")


@cli.command("release")
@click.argument("pool_name", metavar="POOL")
@click.argument("owner")
@pass_settings
def release(s: IpctlSettings, pool_name: str, owner: str) -> None:
    """Release a sticky member's kept IP (same as unbind)."""
    _unbind(s, pool_name, owner, "released")


@cli.group()
def namespace() -> None:
    """Per-namespace settings."""


@namespace.command("default")
@click.argument("ns", metavar="NAMESPACE")
@click.argument("pool_name", metavar="POOL")
@pass_settings
def namespace_default(s: IpctlSettings, ns: str, pool_name: str) -> None:
    """Pods of NAMESPACE without other hints get their IP from POOL."""
    r = s.call("SetNamespaceDefault", pb.SetNamespaceDefaultRequest(namespace=ns,
                                                                    pool=pool_name))
    emit_done(s, r, f"namespace {ns} default pool: {pool_name or '(none)'}")


# ------------------------------------------------------------- sync, nodes
@cli.group()
def sync() -> None:
    """ONOS synchronisation."""


@sync.command("status")
@pass_settings
def sync_status(s: IpctlSettings) -> None:
    """Queue depth, failures and lease holder of the ONOS sync."""
    r = s.call("SyncStatus", pb.SyncStatusRequest())
    emit_fields(s, r, [
        ("enabled", r.enabled), ("pending", r.pending), ("failed", r.failed),
        ("oldest pending", f"{r.oldest_pending_seconds:.1f}s" if r.pending else ""),
        ("last error", r.last_error), ("last success", r.last_success),
        ("last resync", r.last_resync), ("holder", r.holder),
        ("dead letters", r.dead_letters),
    ])


@sync.command("now")
@pass_settings
def sync_now(s: IpctlSettings) -> None:
    """Resynchronise ONOS with the IPAM state now."""
    r = s.call("SyncNow", pb.SyncNowRequest())
    if r.forwarded:
        text = (f"resync requested; the replica holding the sync lease runs it within a "
                f"second ({r.holder or 'none yet: the next holder runs it'}); see "
                "`ipctl sync status`")
    else:
        text = f"resync queued {r.queued} ONOS change(s)"
    emit_done(s, r, text)


DEAD_LETTER_COLS: list[Column] = [
    ("ID", lambda d: d.id), ("KIND", lambda d: d.kind), ("OBJECT", lambda d: d.object_id),
    ("OP", lambda d: d.op), ("ATTEMPTS", lambda d: d.attempts),
    ("DEAD SINCE", lambda d: d.dead_at), ("LAST ERROR", lambda d: d.last_error[:120]),
]


@sync.command("dead-letters")
@pass_settings
def sync_dead_letters(s: IpctlSettings) -> None:
    """Outbox rows ONOS kept rejecting, set aside so they block nothing."""
    emit(s, s.call("ListDeadLetters", pb.ListDeadLettersRequest()).dead_letters,
         DEAD_LETTER_COLS)


@sync.command("skip")
@click.argument("dead_id", metavar="ID", type=click.IntRange(min=1))
@pass_settings
def sync_skip(s: IpctlSettings, dead_id: int) -> None:
    """Drop a dead letter for good (ONOS never gets that change)."""
    r = s.call("SkipDeadLetter", pb.SkipDeadLetterRequest(id=dead_id))
    if not r.found:
        raise IpctlError(f"no dead letter {dead_id}")
    emit_done(s, r, f"dead letter {dead_id} skipped")


@sync.command("retry")
@click.argument("dead_ids", metavar="ID...", nargs=-1, type=click.IntRange(min=1))
@click.option("--all", "every", is_flag=True, help="every dead letter")
@pass_settings
def sync_retry(s: IpctlSettings, dead_ids: tuple[int, ...], every: bool) -> None:
    """Put dead letters back at the end of the outbox (one whose object has a newer pending
    row is dropped instead: that row wins)."""
    if every == bool(dead_ids):
        raise click.UsageError("give dead letter IDs or --all")
    r = s.call("RetryDeadLetters", pb.RetryDeadLettersRequest(ids=list(dead_ids), all=every))
    emit_done(s, r, f"{r.retried} dead letter(s) back in the outbox")


@cli.group()
def node() -> None:
    """Nodes (registered by their agents)."""


@node.command("list")
@pass_settings
def node_list(s: IpctlSettings) -> None:
    """Registered nodes and whether their agents are alive."""
    emit(s, s.call("ListNodes", pb.ListNodesRequest()).nodes, NODE_COLS)


@node.command("delete")
@click.argument("name")
@click.option("--release-ports", is_flag=True,
              help="also release the node's pod ports by their policy (dynamic freed, "
                   "bound ones unbound from the node)")
@click.option("--dry-run", is_flag=True, help="print what would be released, change nothing")
@click.option("--yes", "-y", is_flag=True, help="do not ask for confirmation")
@pass_settings
def node_delete(s: IpctlSettings, name: str, release_ports: bool, dry_run: bool,
                yes: bool) -> None:
    """Forget a node (its agent re-registers if it is still running)."""
    if release_ports or dry_run:
        confirm_and_apply(
            s, f"node {name}",
            lambda dry: s.call("ReleaseNodePorts", pb.ReleaseNodePortsRequest(
                node=name, dry_run=dry or not release_ports)).released,
            yes=yes, dry_run=dry_run)
        if dry_run:
            return
    # After its ports: a node already deleted (without --release-ports) can be repaired.
    try:
        r = s.call("DeleteNode", pb.DeleteNodeRequest(name=name))
    except IpctlError as exc:
        if not (release_ports and "does not exist" in exc.message):
            raise
        click.echo(f"node {name} was not registered", err=True)
        return
    if release_ports and s.output == "json":
        return  # the released ports were the document
    emit_done(s, r, f"node {name} deleted")


# ------------------------------------- global options after the subcommand
def _override(attr: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        settings = ctx.find_object(IpctlSettings)
        if value is not None and settings is not None:
            setattr(settings, attr, value)
    return callback


def _trailing_globals() -> list[click.Option]:
    return [
        click.Option(["--controller"], default=None, metavar="HOST:PORT", expose_value=False,
                     callback=_override("controller"), help="as the global option"),
        click.Option(["-o", "--output"], type=click.Choice(OUTPUTS), default=None,
                     expose_value=False, callback=_override("output"),
                     help="as the global option"),
        click.Option(["--timeout"], type=click.FloatRange(min=0, min_open=True), default=None,
                     metavar="SECONDS", expose_value=False, callback=_override("timeout"),
                     help="as the global option"),
    ]


def _add_trailing_globals(group: click.Group) -> None:
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _add_trailing_globals(cmd)
        else:
            cmd.params.extend(_trailing_globals())


_add_trailing_globals(cli)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (`ipctl`)."""
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="ipctl")


if __name__ == "__main__":
    main()
