"""IPAM: pools, subnets, policies, bindings and ports; the allocator; the stores; ONOS sync.

The allocation core (`ipam.service`, the facade over `config`, `pools`, `allocation`,
`bindings`, `sweeps` and `nodes`; `ipam.policy`, one object per IP policy; `ipam.placement`;
`ipam.addr`) does no network I/O and works against the store protocol in `ipam.store.base`, so
the SQL store and the in-memory store are interchangeable and pass one conformance suite.
`ipam.onos` is the one home of the ONOS sync: the REST client (the only part that talks
HTTP), the outbox worker, the desired-state builders, and `OutboxStore`, the seam every store
implements for it.
"""
