"""Network namespaces for tests, made with the independent `ip` tool.

Names carry a random suffix because several people run tests on the same machine at once;
everything made here is removed again by the fixture, even when the test fails.

Use the fixture by importing it into a test module (``from tests.lab.netns import
netns_fixture``) and asking for ``netns``; it yields a :class:`LabNetns` with the name
and the /var/run/netns path.
"""
from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

NETNS_DIR = "/var/run/netns"


@dataclass(frozen=True)
class LabNetns:
    name: str

    @property
    def path(self) -> str:
        return f"{NETNS_DIR}/{self.name}"

    def __str__(self) -> str:
        return self.path


def unique_name(prefix: str, length: int = 15) -> str:
    """prefix + random hex, cut to `length` (15 fits an interface name)."""
    room = length - len(prefix)
    if room < 4:
        raise ValueError(f"prefix {prefix!r} leaves too little room for a random suffix")
    return prefix + uuid.uuid4().hex[:room]


def make_netns(prefix: str = "ect") -> str:
    name = unique_name(prefix, 24)
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True, text=True,
                   timeout=10)
    return name


def del_netns(name: str) -> None:
    """Idempotent: a namespace a test already removed is fine."""
    if not os.path.exists(f"{NETNS_DIR}/{name}"):
        return
    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True, text=True,
                   timeout=10)


def ns_exec(name: str, *argv: str, timeout: float = 10.0,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", name, *argv], check=check,
                          capture_output=True, text=True, timeout=timeout)


def ip(*argv: str, netns: str | None = None, check: bool = True,
       timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    """`ip [-n NS] ...`; the tool the tests check our netlink code against."""
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(argv)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def host_link_gone(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode != 0


@pytest.fixture(name="netns")
def netns_fixture() -> Iterator[LabNetns]:
    """A fresh named netns, deleted afterwards; request it as `netns`."""
    ns = LabNetns(make_netns())
    try:
        yield ns
    finally:
        del_netns(ns.name)
