"""End to end over the network: an agent dials the controller over TCP with mutual TLS (its
node certificate, CN node:<name>), in a lab whose controller has a namespace of its own;
ipctl presents the admin certificate. Real processes, the real `ecnet` binary, private OVS."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.lab.cluster import CONTROL_PREFIX, Lab, ping
from tests.lab.helpers import wait_until

pytestmark = [pytest.mark.root, pytest.mark.ovs]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("tlslab"), controller_netns=True) as lab:
        lab.start_controller()
        lab.ipctl("pool", "create", "lab", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "lab", "10.62.0.0/24")
        lab.add_tcp_node("t1", "--controller-timeout", "5")
        yield lab


def test_pods_attach_through_an_agent_on_mtls(lab: Lab) -> None:
    node = lab.nodes[0]
    a, b = node.add_pod("a"), node.add_pod("b")
    assert a.ip.startswith("10.62.0.") and b.ip.startswith("10.62.0.")
    assert ping(a, b.ip)
    ports = json.loads(lab.ipctl("port", "list", "-o", "json").stdout)
    assert {p["node"] for p in ports} == {"t1"} and len(ports) == 2
    # The agent registered its node with its own certificate.
    wait_until(lambda: any(n["name"] == "t1" for n in json.loads(
        lab.ipctl("node", "list", "-o", "json").stdout)), 20, "node t1 registered")
    assert node.cni("DEL", a).ok and node.cni("DEL", b).ok
    assert json.loads(lab.ipctl("port", "list", "-o", "json").stdout) == []


def test_the_tcp_listener_takes_no_plaintext_and_no_stranger(lab: Lab) -> None:
    """From the node's namespace, where an attacker on the network would be."""
    node = lab.nodes[0]
    target = f"{CONTROL_PREFIX}.254:{lab.port}"
    p = node_ipctl(lab, node.netns, target, "pool", "list")
    assert p.returncode == 1 and "cannot reach" in p.stderr.decode()
    # A node's certificate is not an admin's.
    assert lab.pki is not None
    p = node_ipctl(lab, node.netns, target, *lab.pki.client_flags("node-t1"), "pool", "list")
    assert p.returncode == 1 and "may not call" in p.stderr.decode(), p.stderr


def node_ipctl(lab: Lab, netns: str, target: str, *args: str
               ) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-m",
                           "ipcontroller.cli", "--controller", target, "--timeout", "3", *args],
                          capture_output=True, timeout=60, cwd=lab.repo)
