"""Shared, stateful fakes, one per seam (OVS, controller client, netlink): each keeps the
state a real component would (ports on bridges, flows in tables, allocations, links), so
tests assert what is there afterwards rather than which calls were made. Each satisfies
its declared Protocol without ``type: ignore`` (tests/run.sh type-checks this package)."""
