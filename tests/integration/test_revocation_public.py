"""The public endpoint serves what the issuer published: CRLs from the bucket, CA certificates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from services.revocation.app import RevocationService, wire
from services.revocation.settings import RevocationSettings
from shared import subjects
from shared.testing.revocation_kit import LabCa, crl_published, drained, publish, wait_until

pytestmark = pytest.mark.integration


async def _running(nats_url: str, db_url: str, tmp_path: Path) -> AsyncIterator[RevocationService]:
    settings = RevocationSettings(
        nats_url=nats_url, revocation_database_url=db_url, var_dir=tmp_path / "var", public_port=0
    )
    svc = wire(settings)
    await svc.runtime.app.start()
    try:
        yield svc
    finally:
        await svc.runtime.app.stop()


@pytest.fixture
async def on_both(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[RevocationService]:
    """The service on SQLite and on PostgreSQL."""
    async for svc in _running(nats_url, database_url, tmp_path):
        yield svc


@pytest.fixture
async def service(nats_url: str, tmp_path: Path) -> AsyncIterator[RevocationService]:
    """The service on SQLite (for what does not depend on the database)."""
    async for svc in _running(nats_url, f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", tmp_path):
        yield svc


async def put_crl(nats_client, ca: LabCa, number: int, der: bytes, delta_of: int | None = None):  # type: ignore[no-untyped-def]
    name = f"{ca.name}/{'delta-' if delta_of is not None else ''}{number}.crl"
    store = await nats_client.jetstream().object_store(subjects.OBJECT_BUCKET_CRLS)
    await store.put(name, der)
    await publish(nats_client.jetstream(), crl_published(ca.name, number, der, name, delta_of))


async def test_a_published_crl_is_served_as_der_with_caching_headers(
    on_both: RevocationService, nats_client, tmp_path: Path
) -> None:
    service = on_both
    js = nats_client.jetstream()
    ca = LabCa("corp")
    await publish(js, ca.created())
    await wait_until(lambda: drained(js, "revocation", subjects.CA_CREATED), what="ca.created")
    revoked_at = datetime.now(UTC).replace(microsecond=0)
    full = ca.crl(7, [(1111, revoked_at), (2222, revoked_at)])
    await put_crl(nats_client, ca, 7, full)
    await wait_until(lambda: drained(js, "revocation", subjects.CRL_PUBLISHED), what="crl")

    async with httpx.AsyncClient(base_url=service.public.url) as http:
        response = await http.get("/crl/corp.crl")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/pkix-crl"
        assert response.content == full
        crl = x509.load_der_x509_crl(response.content)
        assert crl.is_signature_valid(ca.cert.public_key())
        assert sorted(r.serial_number for r in crl) == [1111, 2222]
        max_age = int(response.headers["cache-control"].split("max-age=")[1].split(",")[0])
        assert 0 < max_age <= (crl.next_update_utc - datetime.now(UTC)).total_seconds()
        assert parsedate_to_datetime(response.headers["last-modified"]) == crl.last_update_utc
        again = await http.get("/crl/corp.crl", headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304

    (tmp_path / "corp.crl").write_bytes(response.content)
    openssl = await asyncio.create_subprocess_exec(
        "openssl", "crl", "-inform", "DER", "-in", str(tmp_path / "corp.crl"), "-noout", "-text",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    text = (await openssl.communicate())[0].decode()
    assert "Serial Number: 0457" in text and "Serial Number: 08AE" in text


async def test_only_the_newest_crl_number_is_served_and_deltas_have_their_own_url(
    on_both: RevocationService, nats_client
) -> None:
    service = on_both
    js = nats_client.jetstream()
    ca = LabCa("corp")
    now = datetime.now(UTC)
    newer = ca.crl(9, [(1, now)])
    await put_crl(nats_client, ca, 9, newer)
    await put_crl(nats_client, ca, 8, ca.crl(8, []))
    delta = ca.crl(10, [(2, now)], delta_of=9)
    await put_crl(nats_client, ca, 10, delta, delta_of=9)
    await wait_until(lambda: drained(js, "revocation", subjects.CRL_PUBLISHED), what="crls")

    async with httpx.AsyncClient(base_url=service.public.url) as http:
        assert (await http.get("/crl/corp.crl")).content == newer
        served_delta = await http.get("/crl/corp-delta.crl")
        assert served_delta.content == delta
        indicator = x509.load_der_x509_crl(served_delta.content).extensions.get_extension_for_class(
            x509.DeltaCRLIndicator
        )
        assert indicator.value.crl_number == 9
        assert (await http.get("/crl/other.crl")).status_code == 404
        assert (await http.get("/crl/other-delta.crl")).status_code == 404


async def test_a_crl_not_signed_by_its_ca_is_not_served(
    service: RevocationService, nats_client
) -> None:
    js = nats_client.jetstream()
    ca, impostor = LabCa("corp"), LabCa("corp")
    await publish(js, ca.created())
    await wait_until(lambda: drained(js, "revocation", subjects.CA_CREATED), what="ca.created")
    await put_crl(nats_client, impostor, 3, impostor.crl(3, [], next_update=timedelta(hours=2)))
    await wait_until(lambda: drained(js, "revocation", subjects.CRL_PUBLISHED), what="crl")
    async with httpx.AsyncClient(base_url=service.public.url) as http:
        assert (await http.get("/crl/corp.crl")).status_code == 404


async def test_the_ca_certificate_is_served_at_its_aia_url(
    service: RevocationService, nats_client
) -> None:
    js = nats_client.jetstream()
    ca = LabCa("corp")
    await publish(js, ca.created())
    await wait_until(lambda: drained(js, "revocation", subjects.CA_CREATED), what="ca.created")
    async with httpx.AsyncClient(base_url=service.public.url) as http:
        response = await http.get("/ca/corp.crt")
        assert response.headers["content-type"] == "application/pkix-cert"
        assert x509.load_der_x509_certificate(response.content) == ca.cert
        assert (await http.get("/ca/nobody.crt")).status_code == 404


async def test_publishers_get_the_streams_acknowledgement_while_the_service_listens(
    service: RevocationService, nats_client
) -> None:
    # The service also listens to cert.issued / cert.revoked outside JetStream (to drop cached
    # OCSP answers); it must never answer a publisher's ack inbox itself.
    js = nats_client.jetstream()
    ca = LabCa("corp")
    events = [ca.issued_event(f"h{i}").model_dump_json().encode() for i in range(300)]
    acks = [await js.publish(subjects.CERT_ISSUED, data) for data in events]
    assert {ack.stream for ack in acks} == {"CERT"}
    assert len({ack.seq for ack in acks}) == 300
