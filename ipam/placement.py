"""Pure placement decisions: which pool a pod lands in, and who owns a binding.

First match wins (DESIGN.md "Product types"): pod annotations passed by the runtime (pool, the
pool of a requested IP, product type), then the network config, then the namespace default
the controller keeps, then a pool that declares the requested product type.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from .domain import AllocationRequest, Pool, Port
from .errors import InvalidArgument, NotFound, PolicyConflict
from .policy import policy_for_product_type, rules_for


def choose_pool(req: AllocationRequest, pools: Iterable[Pool],
                namespace_default: str | None, ip_pool: str | None = None) -> Pool:
    """Pick the pool for a request; first match wins (issue 3, DESIGN.md):

    1. the `ecnet.io/pool` annotation (`req.pool`): must exist and fit the product type;
    2. the pool owning the `ecnet.io/ip` annotation's address (`ip_pool`, found by the
       caller from the subnets);
    2b. the sticky pool owned by the pod's stateful group (`group_of`), if it fits;
    3. the network config's pool (`req.config_pool`), then the namespace default, each
       taken only if it fits the requested product type (an annotated product type beats
       the network config);
    4. with a product type and nothing above: the one pool declaring that product type by
       name, else the one pool with its policy.
    """
    by_name = {p.name: p for p in pools}
    wanted = policy_for_product_type(req.product_type)
    group = group_of(req)

    def fits(pool: Pool) -> bool:
        return (wanted is None or pool.policy is wanted) and pool.group in ("", group)

    def chosen(pool: Pool) -> Pool:
        if pool.group and pool.group != group:
            raise PolicyConflict(f"pool {pool.name!r} is reserved for group {pool.group!r}; "
                                 f"this pod is {'in group ' + repr(group) if group else 'in none'}")
        if not fits(pool):
            raise _mismatch(req, pool)
        return pool

    if req.pool:
        pool = by_name.get(req.pool)
        if pool is None:
            raise NotFound(f"pool {req.pool!r} does not exist")
        return chosen(pool)
    if ip_pool:
        return chosen(by_name[ip_pool])
    # A stateful group with a pool of its own draws from it (issue 3: "a group may own a
    # named IP pool").
    owned = [p for p in by_name.values() if group and p.group == group and fits(p)]
    if len(owned) == 1:
        return owned[0]
    if req.config_pool and req.config_pool not in by_name:
        raise NotFound(f"pool {req.config_pool!r} (network config) does not exist")
    for name in (req.config_pool, namespace_default):
        if name and name in by_name and fits(by_name[name]):
            return by_name[name]
    if wanted is None:
        raise InvalidArgument(
            "no pool for this pod: set the ecnet.io/pool annotation, the network "
            "config's \"pool\", or a namespace default (ipctl namespace default)")
    label = req.product_type.strip().lower()
    open_pools = [p for p in by_name.values() if fits(p)]
    typed = [p for p in open_pools if p.product_type.strip().lower() == label]
    if not typed:
        typed = [p for p in open_pools if p.product_type
                 and policy_for_product_type(p.product_type) is wanted]
    if not typed:
        typed = [p for p in open_pools if p.policy is wanted and not p.product_type]
    if len(typed) != 1:
        raise InvalidArgument(
            f"product type {req.product_type!r} matches {len(typed)} pools; name one "
            "(ecnet.io/pool)")
    return typed[0]


_ORDINAL = re.compile(r"(.+)-\d+")


def group_of(req: AllocationRequest) -> str:
    """The stateful group a pod belongs to, `namespace/set-name`, from its StatefulSet-style
    name (`set-name-<ordinal>`), or from an explicit owner of that form; "" if none."""
    ident = req.owner or (f"{req.pod.namespace}/{req.pod.name}"
                          if req.pod.namespace and req.pod.name else "")
    ns, sep, name = ident.rpartition("/")
    m = _ORDINAL.fullmatch(name)
    return f"{ns}/{m.group(1)}" if sep and m else ""


def _mismatch(req: AllocationRequest, pool: Pool) -> PolicyConflict:
    wanted = policy_for_product_type(req.product_type)
    assert wanted is not None
    return PolicyConflict(
        f"pod asks for product type {req.product_type!r} ({wanted.value}) but pool "
        f"{pool.name!r} has policy {pool.policy.value}")


def owner_of(req: AllocationRequest, pool: Pool) -> str | None:
    """The stable identity a bound port belongs to; never the container or pod UID."""
    if not rules_for(pool.policy).binds:
        return None
    if req.owner:
        return req.owner
    if req.pod.namespace and req.pod.name:
        return f"{req.pod.namespace}/{req.pod.name}"
    raise InvalidArgument(
        f"pool {pool.name!r} has policy {pool.policy.value}: the pod needs an identity "
        "(K8S_POD_NAMESPACE and K8S_POD_NAME in CNI_ARGS, or ecnet.io/owner)")


def check_owner_scope(req: AllocationRequest, bound: Port | None = None) -> None:
    """Owner annotations are tenant-scoped (issue 12): a pod in namespace `evil` naming
    `ecnet.io/owner: t/o1` must not get tenant t's address, nor join t's sticky group.

    - an owner `ns/name` must be in the pod's own namespace (checked before placement, as the
      group is derived from it);
    - an owner without a namespace (what `ipctl bind` pins for light VMs) belongs to the
      namespace whose pod first claimed it (`bound.pod_namespace`): an admin binding nobody
      has claimed yet is open to the first pod, after that to its namespace only.
    A request without a namespace (a runtime outside Kubernetes) has no tenant to check."""
    ns = req.pod.namespace
    if not req.owner or not ns:
        return
    owner_ns, sep, _ = req.owner.partition("/")
    if sep and owner_ns != ns:
        raise PolicyConflict(f"owner {req.owner!r} is in namespace {owner_ns!r}, not the pod's "
                             f"({ns!r}): a pod may name owners of its own namespace only")
    if not sep and bound is not None and bound.pod_namespace not in ("", ns):
        raise PolicyConflict(f"owner {req.owner!r} belongs to namespace "
                             f"{bound.pod_namespace!r}, not the pod's ({ns!r})")
