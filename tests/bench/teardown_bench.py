"""The agent's veth teardown alone: DEL's wait for its pair, back to back and in a burst.

    .venv/bin/python -m tests.bench.teardown_bench [--pairs 40] [--rounds 2]

Real PodNetlink and Teardown (real netns, real veth pairs with addresses), no agent, OVS or
controller: each sequential DEL dooms its pair and waits for it (`Teardown.start` then
`wait_for`), the next starting at once, so a group delete still in its RCU barrier is in
flight when the next DEL comes. Compared side by side, interleaved by round: 1 sender (one
request in flight: the next DEL's request waits behind it) against the default pool, and
both against the request's own answer (the veth pair deleted by one plain request, what DEL
cost before it waited for the kernel's reports). Prints p50/p99 per mode and how the
pairs were found gone. Not part of the test run.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter

from cni.agent.netlink.plan import PodInterfaceSpec
from cni.agent.netlink.verbs import PodNetlink
from cni.agent.teardown import SENDERS, Teardown
from tests.bench.cni_bench import pct
from tests.lab.netns import del_netns, make_netns, unique_name


def _pairs(nl: PodNetlink, n: int) -> tuple[list[str], list[str]]:
    spaces = [make_netns("ectb") for _ in range(n)]
    taps = [unique_name("tapb") for _ in spaces]
    for i, (ns, tap) in enumerate(zip(spaces, taps, strict=True)):
        nl.setup_pod_interface(PodInterfaceSpec(
            netns=f"/var/run/netns/{ns}", ifname="eth0", host_ifname=tap,
            mac=f"02:00:00:00:{i // 256:02x}:{i % 256:02x}",
            addresses=[(f"10.201.{i // 250}.{i % 250 + 2}", 16)], mtu=1450))
    return spaces, taps


def _sequential(nl: PodNetlink, td: Teardown | None, taps: list[str]) -> list[float]:
    out = []
    for tap in taps:
        t0 = time.perf_counter()
        if td is None:
            nl.delete_pod_interface(tap)
        else:
            td.start("c-" + tap, [tap], None, "eth0")
            td.wait_for("c-" + tap)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--senders", type=int, default=SENDERS, help="the pool to compare")
    a = p.parse_args()
    nl = PodNetlink()
    nl_pool = PodNetlink()   # one link monitor per PodNetlink, so one Teardown each
    pools = {1: Teardown(nl, senders=1), a.senders: Teardown(nl_pool, senders=a.senders)}
    results: dict[str, list[float]] = {}
    how: dict[str, Counter[str]] = {}
    try:
        for _ in range(a.rounds):
            for mode in ("request's answer", "1 sender", f"{a.senders} senders"):
                spaces, taps = _pairs(nl, a.pairs)
                td = (None if mode == "request's answer"
                      else pools[1 if mode == "1 sender" else a.senders])
                before = Counter(td.finished) if td else Counter()
                results.setdefault(mode, []).extend(_sequential(
                    nl_pool if td is pools[a.senders] else nl, td, taps))
                if td is not None:
                    how.setdefault(mode, Counter()).update(td.finished - before)
                for ns in spaces:
                    del_netns(ns)
    finally:
        for td in pools.values():
            td.stop()
        nl.close()
        nl_pool.close()
    print(f"sequential DELs, {a.pairs} pairs x {a.rounds} rounds, each starting when the "
          "previous returned")
    print(f"{'mode':24} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8}  found gone by")
    for mode, ms in results.items():
        print(f"{mode:24} {pct(ms, 50):8.2f} {pct(ms, 90):8.2f} {pct(ms, 99):8.2f}  "
              + ", ".join(f"{k} {v}" for k, v in sorted(how.get(mode, Counter()).items())))


if __name__ == "__main__":
    main()
