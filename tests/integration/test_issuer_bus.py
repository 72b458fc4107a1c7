"""The issuer against a real nats-server and database: requests in, certificates and CRLs out."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509

from services.issuer.app import build
from services.issuer.testing import issuer_settings, make_csr, tampered, user_csr
from shared import subjects
from shared.events import (
    CertIssued,
    CertRenewalRequested,
    CertRequested,
    CertRevoked,
    CrlPublished,
)
from shared.pki import RevocationReason, load_certificate, parse_serial

pytestmark = pytest.mark.integration


class Tap:
    """Every message on one subject in its stream (an ephemeral consumer delivering all)."""

    def __init__(self, nc, subject: str) -> None:
        self.nc, self.subject, self.seen = nc, subject, []

    async def open(self) -> Tap:
        js = self.nc.jetstream()
        self.sub = await js.pull_subscribe(self.subject, stream=subjects.stream_for(self.subject))
        return self

    async def until(self, predicate, within: float = 15.0) -> list[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate(self.seen):
            if loop.time() > deadline:
                raise AssertionError(
                    f"{self.subject}: condition not met; saw {len(self.seen)} messages"
                )
            try:
                for m in await self.sub.fetch(500, timeout=0.3):
                    self.seen.append(json.loads(m.data))
                    await m.ack()
            except TimeoutError:
                pass
        return self.seen

    async def drain(self, seconds: float = 1.0) -> list[dict]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        return await self.until(lambda _: loop.time() > deadline, within=seconds + 5)


async def publish(nc, *events) -> None:
    js = nc.jetstream()
    for ev in events:
        await js.publish(
            ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id}
        )


@pytest.fixture
async def issuer(nats_url, nats_client, database_url, tmp_path):
    rt = build(issuer_settings(tmp_path, nats_url, database_url))
    await rt.app.start()
    yield rt
    await rt.app.stop()


async def test_a_requested_certificate_is_issued_with_every_field_and_a_verifiable_chain(
    issuer, nats_client, tmp_path: Path
) -> None:
    issued = await Tap(nats_client, subjects.CERT_ISSUED).open()
    request = CertRequested(
        request_id="req-alice-1",
        template="user-client",
        csr_pem=user_csr("alice"),
        owner="alice",
        device="alice-laptop",
        metadata={"cost_center": "42"},
    )
    await publish(nats_client, request)
    [body] = await issued.until(lambda s: len(s) >= 1)
    ev = CertIssued.model_validate(body)
    cert = load_certificate(ev.certificate_pem)
    assert ev.request_id == "req-alice-1" and ev.correlation_id == request.correlation_id
    assert ev.serial == format(cert.serial_number, "x") and ev.issuer_ca == "issuing-ec"
    assert (
        ev.owner == "alice" and ev.device == "alice-laptop" and ev.metadata == {"cost_center": "42"}
    )
    assert ev.sans == ["email:alice@example.com"] and ev.subject_dn == "CN=alice"
    assert len(ev.chain_pem) == 2 and ev.thumbprint_sha256 and ev.thumbprint_sha1
    (tmp_path / "leaf.pem").write_text(ev.certificate_pem)
    (tmp_path / "issuing.pem").write_text(ev.chain_pem[0])
    (tmp_path / "root.pem").write_text(ev.chain_pem[1])
    verify = await asyncio.to_thread(
        subprocess.run,
        ["openssl", "verify", "-CAfile", "root.pem", "-untrusted", "issuing.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr


async def test_a_redelivered_or_repeated_request_yields_exactly_one_certificate(
    issuer, nats_client
) -> None:
    issued = await Tap(nats_client, subjects.CERT_ISSUED).open()
    csr = user_csr("bob")
    first = CertRequested(request_id="req-bob", template="user-client", csr_pem=csr, owner="bob")
    again = CertRequested(request_id="req-bob", template="user-client", csr_pem=csr, owner="bob")
    other = CertRequested(request_id="req-bob-2", template="user-client", csr_pem=csr, owner="bob")
    await publish(nats_client, first, again, again, first, other)
    await issued.until(lambda s: {b["request_id"] for b in s} >= {"req-bob", "req-bob-2"})
    await issued.drain(1.0)
    assert sorted(b["request_id"] for b in issued.seen) == ["req-bob", "req-bob-2"]


async def test_a_bad_csr_is_rejected_with_a_stable_code(issuer, nats_client) -> None:
    rejected = await Tap(nats_client, subjects.CERT_REJECTED).open()
    csr, _ = make_csr("carol", [x509.RFC822Name("carol@example.com")])
    await publish(
        nats_client,
        CertRequested(
            request_id="bad-sig", template="user-client", csr_pem=tampered(csr), owner="carol"
        ),
        CertRequested(request_id="bad-template", template="no-such", csr_pem=user_csr("carol")),
    )
    await nats_client.jetstream().publish(
        subjects.CERT_REQUESTED, json.dumps({"request_id": "broken", "template": 7}).encode()
    )
    seen = await rejected.until(lambda s: len(s) >= 3)
    codes = {b["request_id"]: (b["code"], b["message"]) for b in seen}
    assert codes["bad-sig"][0] == "csr_signature_invalid"
    assert codes["bad-template"][0] == "unknown_template" and "no-such" in codes["bad-template"][1]
    assert codes["broken"][0] == "malformed_event" and "template" in codes["broken"][1]


async def test_a_revocation_publishes_a_crl_listing_the_serial_with_its_reason(
    issuer, nats_client, tmp_path: Path
) -> None:
    issued = await Tap(nats_client, subjects.CERT_ISSUED).open()
    crls = await Tap(nats_client, subjects.CRL_PUBLISHED).open()
    await crls.until(lambda s: any(b["ca"] == "issuing-ec" and not b["delta"] for b in s))
    await publish(
        nats_client,
        CertRequested(
            request_id="req-dave", template="user-client", csr_pem=user_csr("dave"), owner="dave"
        ),
    )
    [body] = await issued.until(lambda s: len(s) >= 1)
    before = max(b["crl_number"] for b in crls.seen)
    revoked_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await publish(
        nats_client,
        CertRevoked(
            cert_id=body["cert_id"],
            serial=body["serial"],
            issuer_ca="issuing-ec",
            reason=RevocationReason.KEY_COMPROMISE,
            comment="laptop stolen",
            revoked_at=revoked_at,
            invalidity_date=datetime(2026, 1, 1, tzinfo=UTC),
        ),
    )
    seen = await crls.until(
        lambda s: any(b["crl_number"] > before and b["entries"] == 1 and not b["delta"] for b in s)
    )
    event = CrlPublished.model_validate(
        next(b for b in seen if b["crl_number"] > before and not b["delta"])
    )
    assert event.object_name == f"issuing-ec/{event.crl_number}.crl"
    obs = await nats_client.jetstream().object_store(subjects.OBJECT_BUCKET_CRLS)
    der = (await obs.get(event.object_name)).data
    (tmp_path / "crl.der").write_bytes(der)
    listing = await asyncio.to_thread(
        subprocess.run,
        ["openssl", "crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    text = listing.stdout
    assert body["serial"].upper() in text.replace(":", "").upper()
    assert "Key Compromise" in text
    crl = x509.load_der_x509_crl(der)
    entry = crl.get_revoked_certificate_by_serial_number(parse_serial(body["serial"]))
    assert entry is not None and entry.revocation_date_utc == revoked_at
    assert (
        crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == event.crl_number
    )
    seen = await crls.until(lambda s: any(b["delta"] and b["crl_number"] > before for b in s))
    delta_event = next(b for b in seen if b["delta"] and b["crl_number"] > before)
    assert delta_event["object_name"] == f"issuing-ec/delta-{delta_event['crl_number']}.crl"
    delta = x509.load_der_x509_crl((await obs.get(delta_event["object_name"])).data)
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator).value
    assert indicator.crl_number == delta_event["base_crl_number"] < delta_event["crl_number"]
    assert delta.get_revoked_certificate_by_serial_number(parse_serial(body["serial"])) is not None


async def test_a_burst_of_revocations_is_coalesced_into_a_handful_of_crls(
    issuer, nats_client
) -> None:
    crls = await Tap(nats_client, subjects.CRL_PUBLISHED).open()
    await crls.until(lambda s: any(b["ca"] == "issuing-ec" for b in s))
    burst = [
        CertRevoked(
            cert_id=f"c{i}",
            serial=format(0x10000 + i, "x"),
            issuer_ca="issuing-ec",
            reason=RevocationReason.CESSATION_OF_OPERATION,
            comment="offboarded",
            revoked_at=datetime(2026, 1, 1, tzinfo=UTC),
        )
        for i in range(1000)
    ]
    js = nats_client.jetstream()
    await asyncio.gather(
        *(
            js.publish(
                ev.subject, ev.model_dump_json().encode(), headers={"Nats-Msg-Id": ev.event_id}
            )
            for ev in burst
        )
    )
    seen = await crls.until(
        lambda s: any(b["entries"] == 1000 and not b["delta"] for b in s), within=30
    )
    full_after_burst = [b for b in seen if not b["delta"] and b["ca"] == "issuing-ec"][1:]
    assert 1 <= len(full_after_burst) <= 10  # a thousand revocations, a handful of CRLs


async def test_a_restarted_issuer_keeps_its_cas_and_continues_crl_numbers(
    nats_url, nats_client, tmp_path
) -> None:
    settings = issuer_settings(tmp_path, nats_url)
    crls = await Tap(nats_client, subjects.CRL_PUBLISHED).open()
    first = build(settings)
    await first.app.start()
    await crls.until(lambda s: any(b["ca"] == "issuing-ec" for b in s))
    ca_before = first.issuer.cas.get("issuing-ec").certificate
    await first.app.stop()
    numbers_before = max(b["crl_number"] for b in crls.seen if b["ca"] == "issuing-ec")
    second = build(settings)
    await second.app.start()
    try:
        assert second.issuer.cas.get("issuing-ec").certificate == ca_before
        await second.crls.publish_now("issuing-ec")
        await crls.until(
            lambda s: max(b["crl_number"] for b in s if b["ca"] == "issuing-ec") > numbers_before
        )
    finally:
        await second.app.stop()
    created = await (await Tap(nats_client, subjects.CA_CREATED).open()).drain(1.0)
    assert sorted(b["ca"] for b in created) == ["issuing-ec", "root"]


async def test_a_renewal_request_with_a_new_csr_issues_the_same_subject_with_a_new_key(
    issuer, nats_client
) -> None:
    issued = await Tap(nats_client, subjects.CERT_ISSUED).open()
    renewed = await Tap(nats_client, subjects.CERT_RENEWED).open()
    await publish(
        nats_client,
        CertRequested(
            request_id="req-gina", template="user-client", csr_pem=user_csr("gina"), owner="gina"
        ),
    )
    [old] = await issued.until(lambda s: len(s) >= 1)
    await publish(
        nats_client,
        CertRenewalRequested(
            cert_id=old["cert_id"], request_id="renew-gina", csr_pem=user_csr("gina")
        ),
    )
    seen = await issued.until(lambda s: len(s) >= 2)
    new = next(b for b in seen if b["request_id"] == "renew-gina")
    assert new["renewal_of"] == old["cert_id"] and new["subject_dn"] == old["subject_dn"]
    assert new["sans"] == old["sans"] and new["public_key_sha256"] != old["public_key_sha256"]
    [link] = await renewed.until(lambda s: len(s) >= 1)
    assert (link["old_cert_id"], link["new_cert_id"]) == (old["cert_id"], new["cert_id"])
