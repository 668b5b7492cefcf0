"""The confirm-then-act flow of ipctl's repair commands (`port release`, `node delete
--release-ports`): show what the controller would release (a dry run, so the list is the
controller's, not a guess of ours), ask, then release. `--dry-run` stops after the list and
`--yes` skips the question (scripts)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import click

from ecnet_api.v1 import ecnet_pb2 as pb

from .ipctl_client import IpctlSettings
from .ipctl_output import Column, print_json, print_table

RECLAIM_COLS: list[Column] = [
    ("ID", lambda r: r.port.id[:11]), ("POOL", lambda r: r.port.pool),
    ("POLICY", lambda r: r.port.policy),
    ("IPS", lambda r: ",".join(i.address for i in r.port.ips)),
    ("NODE", lambda r: r.port.node),
    ("POD", lambda r: f"{r.port.pod.namespace}/{r.port.pod.name}" if r.port.pod.name else ""),
    ("CONTAINER", lambda r: r.port.container_id[:12]), ("OUTCOME", lambda r: r.outcome),
]


def show(s: IpctlSettings, rows: Sequence[pb.ReclaimedPort]) -> None:
    if s.output == "json":
        print_json(rows)
    elif rows:
        print_table(rows, RECLAIM_COLS)


def confirm_and_apply(s: IpctlSettings, what: str,
                      call: Callable[[bool], Sequence[pb.ReclaimedPort]], *,
                      yes: bool, dry_run: bool) -> Sequence[pb.ReclaimedPort]:
    """`call(dry_run)` asks the controller; returns what was released (nothing on a dry run
    or a refusal at the prompt, which exits non-zero)."""
    if not yes or dry_run:
        preview = call(True)
        if dry_run:
            show(s, preview)
            if s.output != "json":
                click.echo(f"dry run: {what} would release {_count(preview)}; nothing changed")
            return []
        if s.output != "json":
            show(s, preview)
        click.confirm(f"{what}: release {_count(preview)}?", abort=True, err=True)
    done = call(False)
    show(s, done)
    if s.output != "json":
        click.echo(f"{what}: released {_count(done)}")
    return done


def _count(rows: Sequence[pb.ReclaimedPort]) -> str:
    n = sum(1 for r in rows if r.outcome != "kept")
    return f"{n} port{'s' if n != 1 else ''}"
