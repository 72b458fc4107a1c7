"""What the OCSP responder asks: which CAs exist, the status of a serial, and who signs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime

from cryptography import x509
from sqlalchemy import and_, bindparam
from sqlalchemy import select as sa_select
from sqlmodel import select

from services.revocation.models import KnownCa, KnownCertificate, Revocation
from services.revocation.ocsp import CertificateStatus, Signer
from services.revocation.reads import ReadView
from services.revocation.signers import SignerKeyring
from services.revocation.timeutil import as_utc
from shared.bus import RpcError
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
_STATUS_SQLITE = (
    "SELECT c.cert_id, r.revoked_at, r.reason FROM revocation_certificate AS c"
    " LEFT OUTER JOIN revocation_revocation AS r"
    " ON r.issuer_ca = c.issuer_ca AND r.serial = c.serial"
    " WHERE c.issuer_ca = ? AND c.serial = ?"
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
        if self._db.is_sqlite:
            found = self._db.sqlite_row(_STATUS_SQLITE, (ca, text))
            if found is None:
                return CertificateStatus(known=False)
            _, revoked_at, reason = found
            if isinstance(revoked_at, str):
                revoked_at = datetime.fromisoformat(revoked_at)
        else:
            row = await self._db.first(_STATUS.params(ca=ca, serial=text))
            if row is None:
                return CertificateStatus(known=False)
            revoked_at, reason = row.revoked_at, row.reason
        if revoked_at is None:
            return CertificateStatus(known=True)
        return CertificateStatus(
            known=True, revoked_at=as_utc(revoked_at), reason=RevocationReason(reason)
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
        refused_seconds: float = 300.0,
    ) -> None:
        self._db = db
        self._keyring = keyring
        self._retry = retry_seconds
        self._check = check_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self._refused: dict[str, float] = {}
        self._refused_for = refused_seconds

    def wake(self) -> None:
        self._wake.set()

    async def provision_once(self) -> bool:
        """Certify what is missing or due; True when every CA that can have a signer has one.

        A CA the issuer refuses (a root, say) is asked again only after ``refused_seconds``.
        """
        async with self._db.session() as session:
            cas = (await session.exec(select(KnownCa))).all()
        complete = True
        now = time.monotonic()
        for ca in cas:
            if self._keyring.fresh(ca.ca) or self._refused.get(ca.ca, 0.0) > now:
                continue
            try:
                await self._keyring.ensure(ca.ca, x509.load_der_x509_certificate(ca.der))
            except RpcError as exc:
                if exc.status < 500:
                    self._refused[ca.ca] = now + self._refused_for
                    log.info("no OCSP signer for %s: the issuer refused (%s)", ca.ca, exc)
                else:
                    complete = False
                    log.warning("no OCSP signer for %s yet: %s", ca.ca, exc)
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
