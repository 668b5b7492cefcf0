"""Each IP policy is one object: what it binds, its default quarantine, its retention sweep,
its group rule, its product-type names. Table-driven over every stored policy name."""
from __future__ import annotations

import pytest

from ipam.domain import DEFAULT_QUARANTINE_SECONDS, Policy, Pool
from ipam.errors import InvalidArgument
from ipam.policy import parse_policy, policy_for_product_type, rules_for

# policy: (binds, default quarantine, groups allowed, product-type names)
EXPECTED = {
    Policy.FIXED: (True, 0, False, {"fixed", "light-vm", "static-group"}),
    Policy.STICKY: (True, 0, True, {"sticky", "stateful", "stateful-group"}),
    Policy.DYNAMIC: (False, DEFAULT_QUARANTINE_SECONDS, False,
                     {"dynamic", "stateless", "stateless-group"}),
}


def test_every_stored_policy_name_has_one_registered_object() -> None:
    assert set(EXPECTED) == set(Policy)
    for policy in Policy:
        rules = rules_for(policy)
        assert rules.name is policy and parse_policy(policy.value) is policy


@pytest.mark.parametrize("policy", list(Policy))
def test_what_each_policy_decides(policy: Policy) -> None:
    binds, quarantine, groups, labels = EXPECTED[policy]
    rules = rules_for(policy)
    assert (rules.binds, rules.default_quarantine_seconds, rules.has_groups) == \
        (binds, quarantine, groups)
    assert {p for p in labels if policy_for_product_type(p.upper()) is policy} == labels
    if groups:
        rules.check_group("shop/db")
    for bad in (["shop/db"] if not groups else []) + ["db", "a/b/c", "/db"]:
        with pytest.raises(InvalidArgument, match="only a sticky pool has a group"):
            rules.check_group(bad)
    rules.check_group("")   # no group is always fine


@pytest.mark.parametrize(("policy", "retention", "cutoff"), [
    (Policy.STICKY, 300, 700.0), (Policy.STICKY, 0, None),
    (Policy.FIXED, 300, None), (Policy.DYNAMIC, 300, None),
])
def test_only_sticky_retention_feeds_the_sweep(policy: Policy, retention: int,
                                              cutoff: float | None) -> None:
    pool = Pool("id", "p", policy, retention_seconds=retention)
    assert rules_for(policy).retention_cutoff(pool, 1000.0) == cutoff


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(InvalidArgument, match="unknown policy 'sometimes'; expected fixed"):
        parse_policy("sometimes")
    with pytest.raises(InvalidArgument, match="unknown product type 'vm'; expected one of"):
        policy_for_product_type("vm")
    assert policy_for_product_type("") is None
