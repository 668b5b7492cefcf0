"""The README's main job: a whole ecnet lab on this machine, shown working, then torn down.

Starts a private userspace Open vSwitch, the IP controller (SQLite) and the node agent,
creates a pool with ipctl, attaches two pods (network namespaces) through the real `ecnet`
CNI binary, shows their addresses, pings one from the other, moves megabytes over TCP,
deletes the pods and checks nothing is left.

Then across hosts: three more nodes, each a network namespace with its own OVS and agent,
cabled to an underlay switch; the agents build VXLAN tunnels and flows from the
controller's node and port lists (standalone datapath); a pod on each host pings the
others and moves data over TCP, and reaches a "physical" namespace through the gateway
host. Exit 0 and "RESULT: PASS" when all of it worked.
"""
from __future__ import annotations

import sys
import tempfile
import time

from tests.lab.cluster import Endpoint, Lab, ping, sh, tcp_transfer
from tests.lab.helpers import wait_for


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def main() -> int:
    ok = True
    with tempfile.TemporaryDirectory(prefix="ecnet-demo-") as tmp, Lab(tmp) as lab:
        step("starting the IP controller (SQLite, mutual TLS; ipctl presents the lab's "
             "admin certificate) at " + lab.controller_addr)
        lab.start_controller()
        step("creating pool 'demo' (dynamic) with subnet 10.88.0.0/24")
        lab.ipctl("pool", "create", "demo", "--policy", "dynamic")
        lab.ipctl("subnet", "create", "demo", "10.88.0.0/24")
        step("starting a private userspace Open vSwitch and the node agent 'node1'")
        node = lab.add_node("node1")
        step("attaching two pods through the ecnet CNI binary: " + node.binary)
        t0 = time.perf_counter()
        a = node.add_pod("pod-a", node.netconf(pool="demo"))
        t1 = time.perf_counter()
        b = node.add_pod("pod-b", node.netconf(pool="demo"))
        t2 = time.perf_counter()
        for pod, ms in ((a, (t1 - t0) * 1e3), (b, (t2 - t1) * 1e3)):
            host = pod.result["interfaces"][0]["name"]  # type: ignore[index]
            print(f"    {pod.name}: {pod.ip} (netns {pod.netns}, host end {host}, "
                  f"ADD {ms:.1f} ms)")
        print(lab.ipctl("subnet", "list").stdout.decode())
        print(lab.ipctl("port", "list").stdout.decode())
        step(f"ping {a.name} -> {b.name}")
        if ping(a, b.ip, count=3):
            print("    ping OK")
        else:
            ok = False
            print("    ping FAILED")
        step(f"TCP: 20 MB from {a.name} to {b.name}")
        try:
            t = time.perf_counter()
            got = tcp_transfer(a, b, 20_000_000)
            dt = time.perf_counter() - t
            print(f"    received {got} bytes in {dt:.2f} s")
            ok = ok and got == 20_000_000
        except Exception as exc:  # noqa: BLE001 - report, then tear down
            ok = False
            print(f"    TCP FAILED: {exc}")
        step("deleting the pods through the CNI binary")
        for pod in (a, b):
            res = node.cni("DEL", pod, node.netconf(pool="demo"))
            ok = ok and res.ok
        left = node.pod_ports()
        used = lab.ipctl("pool", "list", "-o", "json").stdout.decode()
        print(f"    ports left on br-int: {left or 'none'}")
        ok = ok and not left
        del used
        ok = multi_host(lab) and ok
        step("tearing down")
    ok = ok and not any(n.startswith("ec") and "p-pod-" in n for n in
                        sh("ip", "netns", "list").stdout.decode().split())
    print("RESULT: PASS" if ok else "RESULT: FAIL", flush=True)
    return 0 if ok else 1


def multi_host(lab: Lab) -> bool:
    """Pods on three hosts and a physical network behind a gateway; True when it all works."""
    ok = True
    step("across hosts: pool 'overlay' (dynamic) with subnet 10.89.0.0/24")
    lab.ipctl("pool", "create", "overlay", "--policy", "dynamic", "--quarantine", "0")
    lab.ipctl("subnet", "create", "overlay", "10.89.0.0/24")
    step("starting hosts h1 (gateway to 172.30.0.0/24), h2, h3: a network namespace each "
         "with its own OVS and agent, NIC ul0 on the underlay 172.31.0.0/24")
    h1 = lab.add_host("h1", gateway=True, gateway_cidrs=["172.30.0.0/24"])
    hosts = [h1, lab.add_host("h2"), lab.add_host("h3")]
    phys = lab.add_phys(h1, ["10.89.0.0/24"])
    print(lab.ipctl("node", "list").stdout.decode())
    try:
        for h in hosts:
            wait_for(lambda h=h: len(h.tunnels()) == 2, 10, f"tunnels on {h.name}")
            tunnels = ", ".join(f"{n} -> {ip}" for n, ip in sorted(h.tunnels().items()))
            print(f"    {h.name} ({h.underlay_ip}): br-tun tunnels {tunnels}")
    except TimeoutError as exc:
        print(f"    tunnels FAILED: {exc}")
        return False
    step("attaching one pod per host")
    pods = [h.add_pod(f"x{i}", h.netconf(pool="overlay")) for i, h in enumerate(hosts, 1)]
    for pod in pods:
        print(f"    {pod.name} on {pod.node.name}: {pod.ip}")
    time.sleep(0.6)  # one topology poll: the other hosts learn the new ports
    step("ping every pod from every other pod (across VXLAN)")
    for a in pods:
        for b in pods:
            if a is b:
                continue
            good = ping(a, b.ip, count=2)
            ok = ok and good
            print(f"    {a.name}@{a.node.name} -> {b.name}@{b.node.name}: "
                  f"{'OK' if good else 'FAILED'}")
    for src, dst in ((pods[1], pods[2]), (pods[2], pods[0])):
        step(f"TCP: 5 MB from {src.name}@{src.node.name} to {dst.name}@{dst.node.name}")
        ok = _tcp(src, dst, 5_000_000) and ok
    step(f"pod on h3 -> physical network {phys.ip} through the gateway h1")
    good = ping(pods[2], phys.ip, count=2) and ping(phys, pods[2].ip, count=2)
    print(f"    ping both ways: {'OK' if good else 'FAILED'}")
    ok = ok and good
    ok = _tcp(pods[2], phys, 5_000_000) and ok
    step("deleting the pods")
    for pod in pods:
        ok = pod.node.cni("DEL", pod, pod.node.netconf(pool="overlay")).ok and ok
    left = [p for h in hosts for p in h.pod_ports()]
    print(f"    pod ports left on the hosts: {left or 'none'}")
    return ok and not left


def _tcp(src: Endpoint, dst: Endpoint, nbytes: int) -> bool:
    try:
        t = time.perf_counter()
        got = tcp_transfer(src, dst, nbytes, port=5400)
        print(f"    received {got} bytes in {time.perf_counter() - t:.2f} s")
        return got == nbytes
    except Exception as exc:  # noqa: BLE001 - report, then tear down
        print(f"    TCP FAILED: {exc}")
        return False


if __name__ == "__main__":
    sys.exit(main())
