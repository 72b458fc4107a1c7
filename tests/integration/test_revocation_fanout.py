"""Revocation fanned out from events on a real bus: a decommissioned device, a compromised CA
or key, and an explicit revocation request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from services.revocation.app import RevocationService, wire
from services.revocation.settings import RevocationSettings
from shared import subjects
from shared.events import (
    CaCompromised,
    CertInstalled,
    CertRevocationRequested,
    DeviceDecommissioned,
    KeyCompromised,
    StoreTarget,
)
from shared.pki import RevocationReason
from shared.testing.revocation_kit import LabCa, drained, messages_on, publish, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(nats_url: str, tmp_path: Path) -> AsyncIterator[RevocationService]:
    svc = wire(RevocationSettings(
        nats_url=nats_url, var_dir=tmp_path / "var", public_port=0,
        revocation_database_url=f"sqlite+aiosqlite:///{tmp_path / 'revocation.db'}",
    ))  # fmt: skip
    await svc.runtime.app.start()
    try:
        yield svc
    finally:
        await svc.runtime.app.stop()


async def handled(js, *subject_names: str) -> None:  # type: ignore[no-untyped-def]
    await wait_until(lambda: drained(js, "revocation", *subject_names), what=str(subject_names))


async def revoked(js, n: int) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    async def enough() -> bool:
        return len(await messages_on(js, subjects.CERT_REVOKED)) >= n

    await wait_until(enough, what=f"{n} cert.revoked")
    return {m["serial"]: m for m in await messages_on(js, subjects.CERT_REVOKED)}


async def test_a_decommissioned_device_loses_every_certificate_installed_on_it(
    service: RevocationService, nats_client
) -> None:
    js = nats_client.jetstream()
    ca = LabCa("corp")
    on_it, issued_for_it, elsewhere = (ca.issued_event("a"), ca.issued_event("b", device="kiosk-7"),
                                       ca.issued_event("c"))  # fmt: skip
    await publish(js, on_it, issued_for_it, elsewhere)
    await handled(js, subjects.CERT_ISSUED)
    await publish(
        js,
        CertInstalled(
            cert_id=on_it.cert_id,
            serial=on_it.serial,
            thumbprint_sha256=on_it.thumbprint_sha256,
            target=StoreTarget(machine="kiosk-7", store_path="/s", alias="a"),
        ),
    )
    await handled(js, subjects.CERT_INSTALLED)
    await publish(js, DeviceDecommissioned(device="kiosk-7"))
    events = await revoked(js, 2)
    assert sorted(events) == sorted([on_it.serial, issued_for_it.serial])
    assert {e["reason"] for e in events.values()} == {RevocationReason.CESSATION_OF_OPERATION}


async def test_a_compromised_ca_revokes_all_it_issued_even_what_arrives_later(
    service: RevocationService, nats_client
) -> None:
    js = nats_client.jetstream()
    bad, good = LabCa("bad"), LabCa("good")
    early, unaffected = bad.issued_event("x"), good.issued_event("y")
    await publish(js, early, unaffected)
    await handled(js, subjects.CERT_ISSUED)
    alarm = CaCompromised(ca="bad", comment="HSM stolen")
    await publish(js, alarm)
    await handled(js, subjects.CA_COMPROMISED)
    late = bad.issued_event("z")
    await publish(js, late)
    events = await revoked(js, 2)
    assert sorted(events) == sorted([early.serial, late.serial])
    assert {e["reason"] for e in events.values()} == {RevocationReason.CA_COMPROMISE}
    assert {e["correlation_id"] for e in events.values()} == {alarm.correlation_id}


async def test_a_compromised_key_revokes_every_certificate_for_it(
    service: RevocationService, nats_client
) -> None:
    js = nats_client.jetstream()
    ca = LabCa("corp")
    leaked = ec.generate_private_key(ec.SECP256R1())
    first, second = ca.issued_event("k1", key=leaked), ca.issued_event("k2", key=leaked)
    other = ca.issued_event("k3", key=ec.generate_private_key(ec.SECP256R1()))
    await publish(js, first, second, other)
    await handled(js, subjects.CERT_ISSUED)
    await publish(js, KeyCompromised(public_key_sha256=first.public_key_sha256))
    events = await revoked(js, 2)
    assert sorted(events) == sorted([first.serial, second.serial])
    assert {e["reason"] for e in events.values()} == {RevocationReason.KEY_COMPROMISE}


async def test_a_revocation_request_on_the_bus_is_carried_out_once(
    service: RevocationService, nats_client
) -> None:
    js = nats_client.jetstream()
    ca = LabCa("corp")
    one, two = ca.issued_event("r1"), ca.issued_event("r2")
    await publish(js, one, two)
    await handled(js, subjects.CERT_ISSUED)
    request = CertRevocationRequested(
        cert_ids=[one.cert_id],
        serials=[two.serial],
        reason=RevocationReason.PRIVILEGE_WITHDRAWN,
        comment="audit",
    )
    await publish(js, request)
    await publish(js, request, msg_id="again")
    await handled(js, subjects.CERT_REVOCATION_REQUESTED)
    events = await revoked(js, 2)
    assert sorted(events) == sorted([one.serial, two.serial])
    assert len(await messages_on(js, subjects.CERT_REVOKED)) == 2
    assert {e["comment"] for e in events.values()} == {"audit"}
