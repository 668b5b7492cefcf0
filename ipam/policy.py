"""The IP policies, one object each: what a policy binds, how long its addresses rest, what
its retention sweep frees and whether a pool of it may be reserved for a group.

Everything that depends on a pool's policy asks its object here (`rules_for(pool.policy)`),
never compares the policy by name. A fourth policy is one `Policy` member (the name stored
in the database and sent over the API) plus one `IpPolicy` subclass decorated `@register`.
"""
from __future__ import annotations

from typing import ClassVar

from .domain import DEFAULT_QUARANTINE_SECONDS, Policy, Pool
from .errors import InvalidArgument


class IpPolicy:
    """What a pool's policy decides; the base class is the conservative default."""

    name: ClassVar[Policy]
    # Product-type names an operator may use for it (pod annotation, pool declaration).
    product_types: ClassVar[tuple[str, ...]] = ()
    # Bound policies key a port by its owner (a stable identity, never the container) and
    # keep it, idle, when the pod goes away.
    binds: ClassVar[bool] = False
    # A pool of this policy may be reserved for one group (a StatefulSet, namespace/name).
    has_groups: ClassVar[bool] = False
    # Seconds a released address rests before it is handed out again (a pool's default).
    default_quarantine_seconds: ClassVar[int] = 0

    def retention_cutoff(self, pool: Pool, now: float) -> float | None:
        """Idle bound ports last used before this time are freed by the sweep; None: the
        sweep frees nothing of this pool (kept until an admin unbinds)."""
        return None

    def check_group(self, group: str) -> None:
        """Refuse a group this policy cannot have (InvalidArgument)."""
        if group and (not self.has_groups or group.count("/") != 1
                      or not all(group.split("/"))):
            raise InvalidArgument(f"group {group!r}: only a sticky pool has a group, written "
                                  "namespace/statefulset-name")


_POLICIES: dict[Policy, IpPolicy] = {}
_PRODUCT_TYPES: dict[str, IpPolicy] = {}


def register(cls: type[IpPolicy]) -> type[IpPolicy]:
    """Make a policy class the behaviour of its `name` (one instance: they hold no state)."""
    rules = cls()
    _POLICIES[cls.name] = rules
    for label in cls.product_types:
        _PRODUCT_TYPES[label] = rules
    return cls


@register
class FixedPolicy(IpPolicy):
    """Light VM: one IP (and hostname) bound to a stable identity; only an admin unbinds."""

    name = Policy.FIXED
    product_types = ("fixed", "light-vm", "static-group")
    binds = True


@register
class StickyPolicy(IpPolicy):
    """Stateful group member: gets its old IP back; freed once idle past the retention."""

    name = Policy.STICKY
    product_types = ("sticky", "stateful", "stateful-group")
    binds = True
    has_groups = True

    def retention_cutoff(self, pool: Pool, now: float) -> float | None:
        return now - pool.retention_seconds if pool.retention_seconds > 0 else None


@register
class DynamicPolicy(IpPolicy):
    """Stateless: any free IP, freed on DEL after a quarantine (not reused at once)."""

    name = Policy.DYNAMIC
    product_types = ("dynamic", "stateless", "stateless-group")
    default_quarantine_seconds = DEFAULT_QUARANTINE_SECONDS


def rules_for(policy: Policy) -> IpPolicy:
    return _POLICIES[policy]


def parse_policy(name: str) -> Policy:
    """A stored or requested policy name; InvalidArgument names the known ones."""
    try:
        policy = Policy(name)
    except ValueError:
        policy = None
    if policy is None or policy not in _POLICIES:
        raise InvalidArgument(f"unknown policy {name!r}; expected "
                              f"{', '.join(p.value for p in _POLICIES)}")
    return policy


def product_type_names() -> list[str]:
    return sorted(_PRODUCT_TYPES)


def policy_for_product_type(product_type: str) -> Policy | None:
    if not product_type:
        return None
    rules = _PRODUCT_TYPES.get(product_type.strip().lower())
    if rules is None:
        raise InvalidArgument(
            f"unknown product type {product_type!r}; expected one of "
            f"{', '.join(product_type_names())}")
    return rules.name
