"""The provisioning policy: from a user's attributes to what each device gets."""

from __future__ import annotations

import pytest

from services.inventory import policy
from services.inventory.policy import Person, PolicyError
from services.inventory.settings import InventorySettings

RULES = {
    "rules": [
        {"name": "all", "match": {}, "provision": [{"template": "user-client"}]},
        {"name": "eng", "match": {"department": ["engineering"]},
         "provision": [{"template": "vpn", "store_type": "pkcs12", "store_path": "vpn/{user}"}]},
        {"name": "admins", "match": {"roles": "admin"}, "provision": [{"template": "admin"}]},
    ]
}  # fmt: skip


def test_the_shipped_policy_gives_every_user_a_client_certificate_on_each_device() -> None:
    shipped = policy.load(InventorySettings().policy_path())
    laptop, desktop = shipped.provisions(Person("alice", "alice@example.com"), ["laptop", "desk"])
    assert (laptop.device, desktop.device) == ("laptop", "desk")
    assert laptop.template == "user-client" and laptop.store_type == "pem"
    assert laptop.store_path == "certs/user-client" and laptop.alias == "user-client-alice"
    assert laptop.subject_dn == "CN=alice" and laptop.sans == ("email:alice@example.com",)


def test_a_user_without_email_gets_no_email_san() -> None:
    (p,) = policy.parse(RULES).provisions(Person("bob"), ["pc"])
    assert p.sans == ()


def test_department_and_role_rules_add_their_templates() -> None:
    rules = policy.parse(RULES)
    engineer = Person("carol", department="engineering", roles=("admin",))
    got = {(p.template, p.store_type, p.store_path) for p in rules.provisions(engineer, ["pc"])}
    assert got == {
        ("user-client", "pem", "certs/user-client"),
        ("vpn", "pkcs12", "vpn/carol"),
        ("admin", "pem", "certs/admin"),
    }
    sales = Person("dan", department="sales")
    assert [p.template for p in rules.provisions(sales, ["pc"])] == ["user-client"]


def test_a_rule_matching_on_an_unknown_attribute_is_refused() -> None:
    with pytest.raises(PolicyError, match="cannot match"):
        policy.parse({"rules": [{"match": {"shoe_size": 42}, "provision": [{"template": "x"}]}]})
