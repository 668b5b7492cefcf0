"""OpenFlow on one bridge through ``ovs-ofctl``, for the standalone datapath.

Flows change rarely (a node joins, a remote port appears), so an exec of ovs-ofctl
(~8 ms) is fine here, and it keeps an OpenFlow codec out of the project. Every
call targets the bridge's management socket explicitly: a private OVS (lab, or a
second OVS on a host) puts it under its own OVS_RUNDIR, not /var/run/openvswitch.
"""
from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterable, Sequence

from ovs_driver.errors import OvsFlowError

log = logging.getLogger(__name__)

DEFAULT_RUNDIR = "/var/run/openvswitch"
_ALL_BITS = 0xFFFFFFFFFFFFFFFF


class OpenFlowBridge:
    """``ovs-ofctl`` bound to one bridge; ``rundir`` is ovs-vswitchd's OVS_RUNDIR
    (``$OVS_RUNDIR`` if unset, else /var/run/openvswitch)."""

    def __init__(
        self,
        bridge: str,
        rundir: str | None = None,
        *,
        ofctl: str = "ovs-ofctl",
        timeout: float = 10.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.bridge = bridge
        self.rundir = rundir or os.environ.get("OVS_RUNDIR") or DEFAULT_RUNDIR
        self.ofctl = ofctl
        self.timeout = timeout
        self.extra_args = list(extra_args)

    @property
    def target(self) -> str:
        return f"unix:{os.path.join(self.rundir, self.bridge)}.mgmt"

    def add_flows(self, flows: Iterable[str], *, bundle: bool = True) -> None:
        """Add flows all-or-nothing: with ``bundle`` (OpenFlow 1.4 bundles, which OVS
        negotiates by default) a bad line leaves the table untouched."""
        text = "".join(f"{f.strip()}\n" for f in flows if f.strip())
        if not text:
            return
        args = (["--bundle"] if bundle else []) + ["add-flows", self.target, "-"]
        self._run("add-flows", args, stdin=text)
        log.debug("openflow flows added bridge=%s count=%d", self.bridge, text.count("\n"))

    def apply_flow_mods(self, lines: Iterable[str]) -> int:
        """Apply flow-mod lines of the ``ovs-ofctl`` file format, each starting with its
        command (``add``, ``modify_strict``, ``delete_strict``...), in one bundle: an
        incremental change lands all at once or not at all. Returns how many lines."""
        text = "".join(f"{line.strip()}\n" for line in lines if line.strip())
        if not text:
            return 0
        self._run("add-flows", ["--bundle", "add-flows", self.target, "-"], stdin=text)
        n = text.count("\n")
        log.debug("openflow flow mods applied bridge=%s count=%d", self.bridge, n)
        return n

    def replace_flows(self, flows: Iterable[str]) -> None:
        """Make the bridge's flow table exactly ``flows`` (ovs-ofctl diffs it against the
        switch and sends only the differences, atomically): unchanged flows keep their
        counters and traffic never sees a half-built table. Only for a bridge whose whole
        table is ours."""
        text = "".join(f"{f.strip()}\n" for f in flows if f.strip())
        self._run("replace-flows", ["--bundle", "replace-flows", self.target, "-"],
                  stdin=text)
        log.debug("openflow flows replaced bridge=%s count=%d", self.bridge, text.count("\n"))

    def del_flows(self, cookie: int | None = None, mask: int = _ALL_BITS,
                  match: str | None = None) -> None:
        """Delete flows by cookie (under ``mask``) and/or a match; no argument at all
        would wipe the bridge, so one is required."""
        if cookie is None and not match:
            raise ValueError("del_flows needs a cookie or a match (refusing to delete all)")
        parts = []
        if cookie is not None:
            parts.append(f"cookie={cookie:#x}/{mask:#x}")
        if match:
            parts.append(match)
        self._run("del-flows", ["del-flows", self.target, ",".join(parts)])

    def dump_flows(self, match: str | None = None, *, stats: bool = False) -> list[str]:
        """Flow lines as ovs-ofctl prints them, without the reply header."""
        args = ([] if stats else ["--no-stats"]) + ["dump-flows", self.target]
        if match:
            args.append(match)
        out = self._run("dump-flows", args)
        return [line.strip() for line in out.splitlines()
                if line.strip() and not line.startswith(("NXST_FLOW", "OFPST_FLOW"))]

    def _run(self, what: str, args: list[str], stdin: str | None = None) -> str:
        cmd = [self.ofctl, *self.extra_args, *args]
        try:
            proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True,
                                  timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OvsFlowError(f"ovs-ofctl {what} failed bridge={self.bridge}: {exc}") from exc
        if proc.returncode != 0:
            raise OvsFlowError(
                f"ovs-ofctl {what} failed "
                f"bridge={self.bridge} rc={proc.returncode}: {proc.stderr.strip()}"
            )
        return proc.stdout
