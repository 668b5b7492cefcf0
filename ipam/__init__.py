"""IPAM: pools, subnets, policies, bindings and ports; the allocator; the store; ONOS sync.

The allocation core (`ipam.service`, `ipam.policy`, `ipam.addr`) does no network I/O and works
against the store protocol in `ipam.store.base`, so the SQL store and the in-memory store are
interchangeable and pass one conformance suite. `ipam.onos` is the only part that talks HTTP.
"""
