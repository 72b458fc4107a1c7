"""Offboarding against a real nats-server and SQLite / PostgreSQL: the right certificates are
revoked, once, and a leaver's later certificates are revoked on arrival."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlmodel import func, select

from services.revocation.app import RevocationService, wire
from services.revocation.models import Revocation
from services.revocation.settings import RevocationSettings
from shared import subjects
from shared.events import CertInstalled, StoreTarget, UserOffboarded, UserOnboarded
from shared.outbox import OutboxMessage
from shared.pki import RevocationReason
from shared.testing.revocation_kit import LabCa, drained, messages_on, publish, wait_until

pytestmark = pytest.mark.integration

PROJECTION = (subjects.CERT_ISSUED, subjects.CERT_INSTALLED, subjects.USER_ONBOARDED)


@pytest.fixture
async def service(
    nats_url: str, database_url: str, tmp_path: Path
) -> AsyncIterator[RevocationService]:
    settings = RevocationSettings(
        nats_url=nats_url,
        revocation_database_url=database_url,
        var_dir=tmp_path / "var",
        public_port=0,
        max_deliver=3,
    )
    svc = wire(settings)
    await svc.runtime.app.start()
    try:
        yield svc
    finally:
        await svc.runtime.app.stop()


def installed(ev, machine: str) -> CertInstalled:  # type: ignore[no-untyped-def]
    return CertInstalled(
        cert_id=ev.cert_id,
        serial=ev.serial,
        thumbprint_sha256=ev.thumbprint_sha256,
        target=StoreTarget(machine=machine, store_path="/etc/certs", alias="wifi"),
    )


async def settled(js, svc: RevocationService, *subject_names: str) -> bool:  # type: ignore[no-untyped-def]
    if not await drained(js, "revocation", *subject_names):
        return False
    async with svc.db.session() as session:
        return (await session.exec(select(func.count()).select_from(OutboxMessage))).one() == 0


async def revoked_serials(js) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(m["serial"] for m in await messages_on(js, subjects.CERT_REVOKED))


async def test_offboarding_revokes_the_users_certificates_and_those_on_their_devices_once(
    service: RevocationService, nats_client
) -> None:
    js = nats_client.jetstream()
    ca = LabCa("corp")
    alice_cert = ca.issued_event("alice", owner="alice")
    on_alice_laptop = ca.issued_event("alice-laptop.corp", owner="svc-wifi")
    bob_cert = ca.issued_event("bob", owner="bob")
    on_bob_laptop = ca.issued_event("bob-laptop.corp", owner="svc-wifi")
    await publish(
        js,
        UserOnboarded(user="alice", devices=["alice-laptop"]),
        UserOnboarded(user="bob", devices=["bob-laptop"]),
        alice_cert,
        on_alice_laptop,
        bob_cert,
        on_bob_laptop,
        installed(on_alice_laptop, "alice-laptop"),
        installed(on_bob_laptop, "bob-laptop"),
    )
    await wait_until(lambda: settled(js, service, *PROJECTION), what="the projection")

    leaving = UserOffboarded(user="alice", comment="left the company")
    await publish(js, leaving)
    await wait_until(lambda: settled(js, service, subjects.USER_OFFBOARDED), what="offboarding")

    revoked = await messages_on(js, subjects.CERT_REVOKED)
    assert sorted(r["serial"] for r in revoked) == sorted(
        [alice_cert.serial, on_alice_laptop.serial]
    )
    for r in revoked:
        assert r["reason"] == RevocationReason.CESSATION_OF_OPERATION
        assert r["comment"] == f"user.offboarded {leaving.event_id}: left the company"
        assert r["correlation_id"] == leaving.correlation_id
        assert r["issuer_ca"] == "corp"

    # The same event delivered again (a new message id defeats the stream's dedupe) changes nothing.
    await publish(js, leaving, msg_id="redelivered-" + leaving.event_id)
    await wait_until(lambda: settled(js, service, subjects.USER_OFFBOARDED), what="redelivery")
    assert await revoked_serials(js) == sorted([alice_cert.serial, on_alice_laptop.serial])
    async with service.db.session() as session:
        assert (await session.exec(select(func.count()).select_from(Revocation))).one() == 2


async def test_a_certificate_reaching_an_offboarded_user_later_is_revoked_at_once(
    service: RevocationService, nats_client
) -> None:
    js = nats_client.jetstream()
    ca = LabCa("corp")
    await publish(js, UserOnboarded(user="carol", devices=["carol-pc"]))
    await wait_until(lambda: settled(js, service, subjects.USER_ONBOARDED), what="onboarding")
    leaving = UserOffboarded(user="carol")
    await publish(js, leaving)
    await wait_until(lambda: settled(js, service, subjects.USER_OFFBOARDED), what="offboarding")

    late_for_carol = ca.issued_event("carol", owner="carol")
    late_on_her_pc = ca.issued_event("carol-pc.corp", owner="svc-vpn")
    someone_else = ca.issued_event("dave", owner="dave")
    await publish(js, late_for_carol, late_on_her_pc, someone_else)
    await wait_until(lambda: settled(js, service, subjects.CERT_ISSUED), what="late issuance")
    await publish(js, installed(late_on_her_pc, "carol-pc"))
    await wait_until(lambda: settled(js, service, subjects.CERT_INSTALLED), what="installation")

    revoked = await messages_on(js, subjects.CERT_REVOKED)
    assert sorted(r["serial"] for r in revoked) == sorted(
        [late_for_carol.serial, late_on_her_pc.serial]
    )
    assert {r["correlation_id"] for r in revoked} == {leaving.correlation_id}
    # Revoked when they were seen, not back-dated to the offboarding (before they existed).
    assert all(
        datetime.fromisoformat(r["revoked_at"]) >= late_for_carol.occurred_at for r in revoked
    )


async def test_offboarding_in_disable_mode_revokes_nothing(
    service: RevocationService, nats_client
) -> None:
    js = nats_client.jetstream()
    erin_cert = LabCa("corp").issued_event("erin", owner="erin")
    await publish(js, erin_cert)
    await wait_until(lambda: settled(js, service, subjects.CERT_ISSUED), what="issuance")
    await publish(js, UserOffboarded(user="erin", mode="disable"))
    await wait_until(lambda: settled(js, service, subjects.USER_OFFBOARDED), what="offboarding")
    assert await revoked_serials(js) == []
