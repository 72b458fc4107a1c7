"""The one issuance path, against SQLite and PostgreSQL: idempotent by request id, always."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select

from services.issuer.app import build
from services.issuer.batch import BatchIssuer, Work
from services.issuer.issuance import Enrollment
from services.issuer.tables import IssuedCertificate
from services.issuer.testing import issuer_settings, user_csr
from shared.outbox import OutboxMessage

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime(database_url, tmp_path):
    rt = build(issuer_settings(tmp_path, "nats://127.0.0.1:1", database_url))
    await rt.db.create_all(tables=rt._tables)  # noqa: SLF001 - no bus: the outbox just fills
    yield rt
    await rt.db.dispose()


async def count(rt, table) -> int:
    async with rt.db.session() as s:
        return (await s.exec(select(func.count()).select_from(table))).one()


def work(request_id: str, user: str = "alice") -> Work:
    return Work(Enrollment(request_id, "user-client", user_csr(user), owner=user))


async def test_duplicates_in_one_batch_get_the_same_single_certificate(runtime) -> None:
    outcomes = await BatchIssuer(runtime, runtime.issuer).issue(
        [work("dup"), work("dup"), work("other", "bob"), work("dup")]
    )
    ids = [o.fields["cert_id"] for o in outcomes]
    assert ids[0] == ids[1] == ids[3] != ids[2]
    assert await count(runtime, IssuedCertificate) == 2
    assert await count(runtime, OutboxMessage) == 2


async def test_a_request_seen_before_returns_the_recorded_certificate_and_emits_nothing(
    runtime,
) -> None:
    batch = BatchIssuer(runtime, runtime.issuer)
    [first] = await batch.issue([work("again")])
    [second] = await batch.issue([work("again")])
    assert second.fields["serial"] == first.fields["serial"] and second.certificate is None
    assert await count(runtime, OutboxMessage) == 1


async def test_two_replicas_racing_on_one_request_record_one_certificate(runtime) -> None:
    a, b = BatchIssuer(runtime, runtime.issuer), BatchIssuer(runtime, runtime.issuer)
    results = await asyncio.gather(
        a.issue([work("race")]), b.issue([work("race")]), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(f, IntegrityError) for f in failures)
    assert await count(runtime, IssuedCertificate) == 1
    [retried] = await a.issue([work("race")])
    assert retried.certificate is None and retried.fields is not None
