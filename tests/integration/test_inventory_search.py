"""The search language compiled to SQL, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from services.inventory.api import InventoryApi
from services.inventory.indexes import ensure_search_indexes
from services.inventory.tables import TABLES, Certificate, CertificateField, Location
from shared.bus import RpcError
from shared.clock import utcnow
from shared.db import Database

pytestmark = pytest.mark.integration

NOW = utcnow()


def cert(cert_id: str, cn: str, **fields: object) -> Certificate:
    values: dict[str, object] = dict(
        cert_id=cert_id, serial=fields.pop("serial", cert_id.encode().hex()), cn=cn,
        subject_dn=f"CN={cn},O=Example", issuer_dn="CN=certbus test CA",
        thumbprint_sha1=(cert_id * 40)[:40], thumbprint_sha256=(cert_id * 64)[:64],
        not_before=NOW - timedelta(days=10), not_after=NOW + timedelta(days=90),
        template="user-client", key_type="EC-secp256r1", key_size=256,
        signature_algorithm="ecdsa-with-SHA256", owner=cn.split("@")[0], status="active",
    )  # fmt: skip
    values.update(fields)
    return Certificate(**values)  # type: ignore[arg-type]


def rows() -> list[Certificate]:
    return [
    cert("a1", "alice"),
    cert("a2", "Alice.Smith", not_after=NOW + timedelta(days=5), metadata_={"costCenter": "42"}),
    cert("b1", "bob", signature_algorithm="sha1WithRSAEncryption", key_type="RSA", key_size=1024,
         not_after=NOW + timedelta(days=300)),
    cert("c1", "carol", status="revoked", revocation_reason="keyCompromise",
         revoked_at=NOW - timedelta(days=1)),
    cert("d1", "dave_100%", not_after=NOW - timedelta(days=3), owner=None, template="web"),
    ]  # fmt: skip


@pytest.fixture
async def api(database_url: str) -> AsyncIterator[InventoryApi]:
    db = Database(database_url, schema="inventory")
    await db.create_all(tables=TABLES)
    await ensure_search_indexes(db)
    async with db.transaction() as s:
        for row in rows():
            s.add(row)
        s.add(CertificateField(cert_id="a2", field="costCenter", value="42"))
        s.add(
            Location(
                cert_id="a1",
                machine="alice-laptop",
                store_path="certs/user-client",
                alias="user-client-alice",
            )
        )
        s.add(
            Location(
                cert_id="b1",
                machine="web-01",
                store_type="pkcs12",
                store_path="srv/tls.p12",
                alias="tls",
                active=False,
            )
        )
    yield InventoryApi(db)
    await db.dispose()


async def ids(api: InventoryApi, text: str) -> list[str]:
    result = await api.certs_list({"query": text, "limit": 100, "sort": "CN"})
    return sorted(item["id"] for item in result["items"])


CASES = [
        ('CN -eq "ALICE"', ["a1"]),
        ("CN -ne alice", ["a2", "b1", "c1", "d1"]),
        ("CN -startswith ali", ["a1", "a2"]),
        ("CN -endswith smith", ["a2"]),
        ("CN -contains LIC", ["a1", "a2"]),
        ("CN -notcontains lic", ["b1", "c1", "d1"]),
        ('CN -contains "_100%"', ["d1"]),
        ("CN -contains %", ["d1"]),
        ('DN -eq "CN=bob,O=Example"', ["b1"]),
        ('IssuerDN -startswith "cn=certbus"', ["a1", "a2", "b1", "c1", "d1"]),
        ("SerialNumber -eq 6131", ["a1"]),
        ("SerialNumber -eq 00:61:31", ["a1"]),
        ("Thumbprint -eq " + "b1" * 20, ["b1"]),
        ("Thumbprint -eq " + ("c1" * 32).upper(), ["c1"]),
        ('NotAfter -lt "%TODAY+30%"', ["a2", "d1"]),
        ("NotAfter -lt %TODAY%", ["d1"]),
        ("NotBefore -le %TODAY-10%", ["a1", "a2", "b1", "c1", "d1"]),
        ("NotBefore -lt %TODAY-10%", []),
        (f"NotAfter -gt {(NOW + timedelta(days=200)).date().isoformat()}", ["b1"]),
        (f"NotAfter -eq {(NOW + timedelta(days=5)).date().isoformat()}", ["a2"]),
        ("RevokedAt -ge %NOW-2%", ["c1"]),
        ("KeySize -lt 2048 AND KeyType -eq rsa", ["b1"]),
        ("KeySize -ge 256", ["a1", "a2", "b1", "c1", "d1"]),
        ('SignatureAlgorithm -eq "sha1WithRSAEncryption"', ["b1"]),
        ("Status -eq active", ["a1", "a2", "b1"]),
        ("Status -eq expired", ["d1"]),
        ("Status -ne revoked", ["a1", "a2", "b1", "d1"]),
        ("RevocationReason -eq keycompromise", ["c1"]),
        ("RevocationReason -eq NULL", ["a1", "a2", "b1", "d1"]),
        ("Owner -eq NULL", ["d1"]),
        ("Owner -ne NULL", ["a1", "a2", "b1", "c1"]),
        ("Template -eq web", ["d1"]),
        ("Device -eq alice-laptop", ["a1"]),
        ("Store -startswith certs/", ["a1"]),
        ("Store -eq srv/tls.p12", []),
        ("Store -eq NULL", ["a2", "b1", "c1", "d1"]),
        ("costCenter -eq 42", ["a2"]),
        ("COSTCENTER -eq 42", ["a2"]),
        ("costcenter -startswith 4", ["a2"]),
        ("costCenter -ne 42", ["a1", "b1", "c1", "d1"]),
        ("costCenter -eq NULL", ["a1", "b1", "c1", "d1"]),
        ("NOT CN -eq alice AND NOT CN -eq bob", ["a2", "c1", "d1"]),
        ('CN -contains "alice" AND (NotAfter -lt "%TODAY+30%" OR '
         'SignatureAlgorithm -eq "sha1WithRSAEncryption")', ["a2"]),
        ('CN -contains "b" AND (NotAfter -lt "%TODAY+30%" OR '
         'SignatureAlgorithm -eq "sha1WithRSAEncryption")', ["b1"]),
        ("(CN -eq alice OR CN -eq bob) AND NOT (Status -eq revoked)", ["a1", "b1"]),
]  # fmt: skip


async def test_each_query_finds_exactly_the_matching_certificates(api: InventoryApi) -> None:
    found = {text: await ids(api, text) for text, _ in CASES}
    assert found == dict(CASES)


async def test_results_page_and_sort_with_the_total_of_all_matches(api: InventoryApi) -> None:
    page = await api.certs_list(
        {"query": "KeySize -ge 256", "sort": "-NotAfter", "limit": 2, "offset": 1}
    )
    assert page["total"] == 5
    assert [c["id"] for c in page["items"]] == ["a1", "c1"]


async def test_a_bad_query_is_a_422_naming_the_position(api: InventoryApi) -> None:
    with pytest.raises(RpcError) as caught:
        await api.certs_list({"query": "CN -eq alice AND"})
    assert caught.value.status == 422 and caught.value.code == "invalid_query"
    assert "at position 17" in caught.value.message


async def test_values_are_bound_parameters_not_sql(api: InventoryApi) -> None:
    assert await ids(api, 'CN -eq "x\' OR 1=1 --"') == []
    assert len(await ids(api, 'CN -ne "x\'; DROP TABLE inventory_certificate; --"')) == 5
