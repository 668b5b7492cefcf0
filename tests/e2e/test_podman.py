"""Podman (CNI backend) as a real CNI client: containers on an ecnet network reach each other
by ping and TCP, and `podman rm` gives everything back."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.cluster import Lab, LabNode

pytestmark = [pytest.mark.root, pytest.mark.ovs, pytest.mark.podman]

NETWORK = "ecnet-podman"


class Podman:
    """A private Podman configuration (storage, runroot, CNI dirs) under one directory."""

    def __init__(self, root: Path, plugin_dir: str, conf_dir: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(f"""
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugin_dir}"]
network_config_dir = "{conf_dir}"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
""")
        (root / "storage.conf").write_text(f"""
[storage]
driver = "vfs"
runroot = "{root}/run"
graphroot = "{root}/graph"
""")
        self.env = {**os.environ, "CONTAINERS_CONF": str(root / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(root / "storage.conf")}

    def __call__(self, *args: str, check: bool = True, timeout: float = 90
                 ) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(["podman", *args], capture_output=True, text=True,
                           env=self.env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)}: {p.returncode}\n{p.stderr}")
        return p

    def import_busybox(self) -> None:
        rootfs = self.root / "rootfs"
        (rootfs / "bin").mkdir(parents=True, exist_ok=True)
        busybox = shutil.which("busybox") or "/bin/busybox"
        shutil.copy(busybox, rootfs / "bin" / "busybox")
        for applet in ("sh", "ip", "ping", "cat", "sleep", "head", "wc", "hostname", "httpd",
                       "wget", "mkdir"):
            link = rootfs / "bin" / applet
            if not link.exists():
                link.symlink_to("busybox")
        tar = self.root / "bb.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(tar), "."], check=True)
        self("import", str(tar), "localhost/ecnet-bb:latest")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, LabNode, Podman]]:
    tmp = tmp_path_factory.mktemp("podman")
    with Lab(tmp / "lab") as lab:
        lab.start_controller()
        lab.ipctl("pool", "create", "pods", "--policy", "dynamic", "--quarantine", "0")
        lab.ipctl("subnet", "create", "pods", "10.62.0.0/24")
        node = lab.add_node("n1")
        conf_dir = tmp / "cni"
        conf_dir.mkdir()
        (conf_dir / f"{NETWORK}.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0", "name": NETWORK,
            "plugins": [{"type": "ecnet", "agentSocket": node.socket, "pool": "pods"}]}))
        podman = Podman(tmp / "podman", str(node.bin_dir), conf_dir)
        podman.import_busybox()
        try:
            yield lab, node, podman
        finally:
            podman("rm", "-f", "-a", check=False)


def container_ip(podman: Podman, name: str) -> str:
    out = podman("exec", name, "ip", "-o", "-4", "addr", "show", "eth0").stdout
    return out.split("inet ")[1].split("/")[0]


def test_podman_containers_reach_each_other(setup: tuple[Lab, LabNode, Podman]) -> None:
    lab, node, podman = setup
    for name in ("pa", "pb"):
        podman("run", "-d", "--name", name, "--network", NETWORK, "localhost/ecnet-bb",
               "sleep", "300")
    ip_a, ip_b = container_ip(podman, "pa"), container_ip(podman, "pb")
    assert ip_a != ip_b and ip_a.startswith("10.62.0.") and ip_b.startswith("10.62.0.")
    ports = node.vsctl("list-ports", "br-int").split()
    assert len([p for p in ports if p.startswith("tap")]) == 2
    assert podman("exec", "pb", "ping", "-c", "2", "-W", "2", ip_a).returncode == 0
    # TCP: pb downloads 4 MB over HTTP from pa (busybox httpd/wget inside the containers)
    podman("exec", "pa", "sh", "-c",
           "mkdir -p /www && head -c 4000000 /dev/zero > /www/big && httpd -p 8080 -h /www")
    count = ""
    deadline = time.time() + 10
    while time.time() < deadline and count != "4000000":
        count = podman("exec", "pb", "sh", "-c", f"wget -q -O - http://{ip_a}:8080/big | wc -c",
                       check=False).stdout.strip()
        if count != "4000000":
            time.sleep(0.3)
    assert count == "4000000"
    podman("rm", "-f", "pa", "pb")
    left = [p for p in node.vsctl("list-ports", "br-int").split() if p.startswith("tap")]
    assert left == []
    ports_left = json.loads(lab.ipctl("port", "list", "--pool", "pods", "-o", "json").stdout)
    assert ports_left == []
