"""What the OCSP responder asks: which CAs exist, the status of a serial, and who signs."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from cryptography import x509
from sqlalchemy import and_, bindparam
from sqlalchemy import select as sa_select
from sqlmodel import select

from services.revocation.models import KnownCa, KnownCertificate, Revocation
from services.revocation.ocsp import CertificateStatus, Signer
from services.revocation.reads import ReadView
from services.revocation.signers import SignerKeyring
from services.revocation.timeutil import as_utc
from shared.db import Database
from shared.pki import RevocationReason, render_serial

log = logging.getLogger("certbus.revocation.status")

_certs = KnownCertificate.__table__  # type: ignore[attr-defined]
_revocations = Revocation.__table__  # type: ignore[attr-defined]
_STATUS = (
    sa_select(_certs.c.cert_id, _revocations.c.revoked_at, _revocations.c.reason)
    .select_from(
        _certs.outerjoin(
            _revocations,
            and_(
                _revocations.c.issuer_ca == _certs.c.issuer_ca,
                _revocations.c.serial == _certs.c.serial,
            ),
        )
    )
    .where(_certs.c.issuer_ca == bindparam("ca"), _certs.c.serial == bindparam("serial"))
)


class RevocationAuthority:
    def __init__(self, db: ReadView, keyring: SignerKeyring) -> None:
        self._db = db
        self._keyring = keyring

    async def issuers(self) -> dict[str, x509.Certificate]:
        async with self._db.session() as session:
            rows = (await session.exec(select(KnownCa))).all()
        return {row.ca: x509.load_der_x509_certificate(row.der) for row in rows}

    async def status(self, ca: str, serial: int) -> CertificateStatus:
        text = render_serial(serial)
        row = await self._db.first(_STATUS.params(ca=ca, serial=text))
        if row is None:
            return CertificateStatus(known=False)
        if row.revoked_at is None:
            return CertificateStatus(known=True)
        return CertificateStatus(
            known=True, revoked_at=as_utc(row.revoked_at), reason=RevocationReason(row.reason)
        )

    def signer(self, ca: str) -> Signer | None:
        return self._keyring.get(ca)


class SignerProvisioner:
    """Keeps a fresh delegated OCSP signer for every known CA, retrying while the issuer is away."""

    def __init__(
        self,
        db: Database,
        keyring: SignerKeyring,
        retry_seconds: float = 1.0,
        check_seconds: float = 3600.0,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._retry = retry_seconds
        self._check = check_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def provision_once(self) -> bool:
        """Certify what is missing or due; True when every CA has a fresh signer."""
        async with self._db.session() as session:
            cas = (await session.exec(select(KnownCa))).all()
        complete = True
        for ca in cas:
            if self._keyring.fresh(ca.ca):
                continue
            try:
                await self._keyring.ensure(ca.ca, x509.load_der_x509_certificate(ca.der))
            except Exception as exc:  # noqa: BLE001 - the issuer may be down; try again soon
                complete = False
                log.warning("no OCSP signer for %s yet: %s", ca.ca, exc)
        if complete and cas:
            self.ready.set()
        return complete

    async def _run(self) -> None:
        while True:
            try:
                complete = await self.provision_once()
            except Exception:  # noqa: BLE001 - the loop must survive a database hiccup
                log.exception("OCSP signer provisioning failed")
                complete = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._check if complete else self._retry)
            self._wake.clear()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ocsp-signer-provisioner")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
