"""Pure policy decisions: which pool a pod lands in, and who owns a binding.

First match wins (DESIGN.md "Product types"): pod annotations passed by the runtime, then the
network config, then the namespace default the controller keeps, then a pool that declares
the requested product type.
"""
from __future__ import annotations

from collections.abc import Iterable

from .domain import AllocationRequest, Policy, Pool
from .errors import InvalidArgument, NotFound, PolicyConflict

# Product-type names an operator may use, mapped to the policy they imply.
PRODUCT_TYPES: dict[str, Policy] = {
    "fixed": Policy.FIXED,
    "light-vm": Policy.FIXED,
    "static-group": Policy.FIXED,
    "sticky": Policy.STICKY,
    "stateful": Policy.STICKY,
    "stateful-group": Policy.STICKY,
    "dynamic": Policy.DYNAMIC,
    "stateless": Policy.DYNAMIC,
    "stateless-group": Policy.DYNAMIC,
}


def policy_for_product_type(product_type: str) -> Policy | None:
    if not product_type:
        return None
    try:
        return PRODUCT_TYPES[product_type.strip().lower()]
    except KeyError:
        raise InvalidArgument(
            f"unknown product type {product_type!r}; expected one of "
            f"{', '.join(sorted(PRODUCT_TYPES))}") from None


def choose_pool(req: AllocationRequest, pools: Iterable[Pool],
                namespace_default: str | None) -> Pool:
    """Pick the pool for a request and check the product type agrees with its policy."""
    by_name = {p.name: p for p in pools}
    wanted = policy_for_product_type(req.product_type)
    name = req.pool
    if not name and namespace_default:
        default = by_name.get(namespace_default)
        if default is not None and (wanted is None or default.policy is wanted):
            name = namespace_default
    if name:
        pool = by_name.get(name)
        if pool is None:
            raise NotFound(f"pool {name!r} does not exist")
    else:
        if wanted is None:
            raise InvalidArgument(
                "no pool for this pod: set the ecnet.io/pool annotation, the network "
                "config's \"pool\", or a namespace default (ipctl namespace default)")
        typed = [p for p in by_name.values()
                 if p.product_type and policy_for_product_type(p.product_type) is wanted]
        if not typed:
            typed = [p for p in by_name.values() if p.policy is wanted and not p.product_type]
        if len(typed) != 1:
            raise InvalidArgument(
                f"product type {req.product_type!r} matches {len(typed)} pools; name one")
        pool = typed[0]
    if wanted is not None and wanted is not pool.policy:
        raise PolicyConflict(
            f"pod asks for product type {req.product_type!r} ({wanted.value}) but pool "
            f"{pool.name!r} has policy {pool.policy.value}")
    return pool


def owner_of(req: AllocationRequest, pool: Pool) -> str | None:
    """The stable identity a bound port belongs to; never the container or pod UID."""
    if not pool.policy.binds:
        return None
    if req.owner:
        return req.owner
    if req.pod.namespace and req.pod.name:
        return f"{req.pod.namespace}/{req.pod.name}"
    raise InvalidArgument(
        f"pool {pool.name!r} has policy {pool.policy.value}: the pod needs an identity "
        "(K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS, or ecnet.io/owner)")
