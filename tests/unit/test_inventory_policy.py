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


def test_a_pem_store_gets_the_usual_file_names_unless_the_policy_names_them() -> None:
    (usual,) = policy.parse(RULES).provisions(Person("bob"), ["pc"])
    assert (usual.cert_file, usual.key_file, usual.chain_file) == (
        "user-client-bob.crt", "user-client-bob.key", "user-client-bob.chain.pem")  # fmt: skip
    assert usual.file_names() == {}  # the target carries nothing new

    named = policy.parse({"rules": [{"match": {}, "provision": [{
        "template": "tls-server", "store_path": "etc/nginx/tls", "alias": "{device}",
        "cert_file": "{alias}.pem", "key_file": "{alias}-key.pem", "chain_file": "chain.pem",
    }]}]})  # fmt: skip
    (p,) = named.provisions(Person("bob"), ["web-01"])
    assert p.file_names() == {
        "cert_file": "web-01.pem",
        "key_file": "web-01-key.pem",
        "chain_file": "chain.pem",
    }


def test_file_names_in_the_defaults_apply_to_every_pem_entry_but_not_to_other_stores() -> None:
    rules = policy.parse({**RULES, "defaults": {"cert_file": "{user}-cert.pem"}})
    got = {
        p.template: p.file_names()
        for p in rules.provisions(Person("carol", department="engineering"), ["pc"])
    }
    assert got["user-client"] == {
        "cert_file": "carol-cert.pem",
        "key_file": "user-client-carol.key",
        "chain_file": "user-client-carol.chain.pem",
    }
    assert got["vpn"] == {}  # a PKCS#12 file has no PEM files


@pytest.mark.parametrize(
    "names, complaint",
    [
        ({"cert_file": "../etc/passwd"}, "is a path, not a file name"),
        ({"key_file": "keys/{user}.key"}, "is a path, not a file name"),
        ({"chain_file": "..\\chain.pem"}, "is a path, not a file name"),
        ({"cert_file": ".."}, "is not a file name"),
        ({"cert_file": ""}, "is not a file name"),
        ({"key_file": ".{alias}.key"}, "hidden file"),
        ({"cert_file": "{owner}.crt"}, "unknown placeholder(s) ['owner']"),
        ({"cert_file": "{}.crt"}, "unknown placeholder"),
        ({"cert_file": "{alias.crt"}, "cert_file '{alias.crt'"),
        ({"cert_file": 42}, "must be a file name"),
        (
            {"cert_file": "{alias}.pem", "chain_file": "{alias}.pem"},
            "must name three different files",
        ),
    ],
)
def test_a_pem_file_name_that_is_not_a_plain_file_name_is_refused_with_the_rule_named(
    names: dict[str, object], complaint: str
) -> None:
    data = {"rules": [{"name": "web", "match": {}, "provision": [{"template": "tls", **names}]}]}
    with pytest.raises(PolicyError) as refused:
        policy.parse(data)
    assert complaint in str(refused.value)
    assert str(refused.value).startswith("rule web, template tls:")
    with pytest.raises(PolicyError, match="^defaults:"):
        policy.parse({"defaults": names, "rules": []})


def test_file_names_for_a_store_that_is_no_pem_directory_are_refused() -> None:
    entry = {"template": "vpn", "store_type": "pkcs12", "cert_file": "vpn.crt"}
    with pytest.raises(
        PolicyError,
        match="cert_file can only name the files of a PEM directory, not of a pkcs12 store",
    ):
        policy.parse({"rules": [{"name": "vpn", "match": {}, "provision": [entry]}]})
