"""Synchronous operations for the gateway: CAs, templates and enrollment (services/README.md)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from cryptography import x509

from services.issuer import errors, records, urls
from services.issuer.batch import BatchIssuer, GroupCommit, Outcome, Work
from services.issuer.ca import CertificateAuthority
from services.issuer.errors import Rejection
from services.issuer.issuance import (
    Enrollment,
    Issuer,
    issued_fields,
    renewal_enrollment,
)
from services.issuer.keys import MLDSA, generate_key
from services.issuer.pfx import build_pkcs12
from services.issuer.templates import KeyGeneration, KeyRules, SanRules, SubjectRules, Template
from shared.bus import RpcError
from shared.events import new_id
from shared.pki import pem, render_serial, thumbprint
from shared.runtime import ServiceRuntime

RPC_CONCURRENCY = 64


def ca_view(ca: CertificateAuthority, base_url: str) -> dict[str, Any]:
    cert = ca.certificate
    return {
        "name": ca.name,
        "parent": ca.parent.name if ca.parent else None,
        "kind": "root" if ca.is_root else "issuing",
        "key_type": ca.key_type,
        "backend": ca.backend,
        "subject_dn": cert.subject.rfc4514_string(),
        "serial": render_serial(cert.serial_number),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "thumbprint_sha256": thumbprint(cert),
        "certificate_pem": pem(cert),
        "chain_pem": ca.chain_pem(),
        "crl_url": urls.crl_url(base_url, ca.name),
        "ca_issuers_url": urls.ca_issuers_url(base_url, ca.name),
    }


def _rpc_error(exc: Rejection) -> RpcError:
    return RpcError(exc.code, exc.message, exc.status)


def _text(request: dict[str, Any], key: str) -> str | None:
    value = request.get(key)
    return str(value) if value not in (None, "") else None


class IssuerRpc:
    def __init__(self, rt: ServiceRuntime, issuer: Issuer, ocsp_validity_days: int = 30) -> None:
        self.rt = rt
        self.issuer = issuer
        self.ocsp_validity_days = ocsp_validity_days
        self._group = GroupCommit(BatchIssuer(rt, issuer).issue)

    def register(self) -> None:
        for name, fn in (
            ("cas.list", self.cas_list),
            ("templates.list", self.templates_list),
            ("enroll.csr", self.enroll_csr),
            ("enroll.pfx", self.enroll_pfx),
            ("enroll.renew", self.enroll_renew),
            ("certs.get", self.cert_get),
            ("ocsp.signer", self.ocsp_signer),
        ):
            self.rt.rpc(name, fn, max_workers=RPC_CONCURRENCY if name.startswith("enroll.") else 1)

    async def cas_list(self, _request: dict[str, Any]) -> dict[str, Any]:
        """The CAs this issuer holds, each with its chain (PEM, leaf-most first)."""
        return {"items": [ca_view(ca, self.issuer.base_url) for ca in self.issuer.cas.all()]}

    async def templates_list(self, _request: dict[str, Any]) -> dict[str, Any]:
        """The templates in force, with every rule."""
        self.issuer.templates.reload_if_changed()
        return {"items": [t.public() for t in self.issuer.templates.all()]}

    async def cert_get(self, request: dict[str, Any]) -> dict[str, Any]:
        """A certificate this issuer issued, by id, request id, serial or SHA-256 thumbprint."""
        async with self.rt.db.session() as session:  # type: ignore[union-attr]
            row = await records.get_issued(session, str(request.get("id", "")))
        if row is None:
            raise RpcError(
                errors.NOT_FOUND, f"no certificate {request.get('id')!r} was issued here", 404
            )
        return _response(records.issued_record(row))

    async def enroll_csr(self, request: dict[str, Any]) -> dict[str, Any]:
        """Issue for a CSR checked against the template; a repeated request id returns the same."""
        req = self._enrollment(request, csr=_text(request, "csr"))
        try:
            return await self._issue(req)
        except Rejection as exc:
            raise _rpc_error(exc) from exc

    async def enroll_pfx(self, request: dict[str, Any]) -> dict[str, Any]:
        """Make a key of the template's type, issue, return both as a protected PKCS#12."""
        password = request.get("password")
        if not isinstance(password, str) or len(password) < 8:
            raise RpcError(
                errors.PASSWORD_REQUIRED,
                "a password of at least 8 characters protects the PKCS#12",
                422,
            )
        req = self._enrollment(request, subject_dn=_text(request, "subject"))
        try:
            return await self._issue_with_server_key(req, password)
        except Rejection as exc:
            raise _rpc_error(exc) from exc

    async def enroll_renew(self, request: dict[str, Any]) -> dict[str, Any]:
        """Renew: same subject, SANs and template (or the one asked for), a new key."""
        try:
            old = await self._old_certificate(str(request.get("cert_id", "")))
            req = renewal_enrollment(
                old,
                request_id=_text(request, "request_id") or new_id(),
                template=_text(request, "template"),
                ca=_text(request, "ca"),
                csr=_text(request, "csr"),
                actor=str(request.get("actor") or "api"),
            )
            if req.csr is None:
                password = request.get("password")
                if not isinstance(password, str) or len(password) < 8:
                    raise Rejection(
                        errors.CSR_REQUIRED,
                        "renewal needs a new key: send a CSR, "
                        "or a password for a server-made PKCS#12",
                    )
                return await self._issue_with_server_key(req, password, renewal_of=old["cert_id"])
            return await self._issue(req, renewal_of=old["cert_id"])
        except Rejection as exc:
            raise _rpc_error(exc) from exc

    async def ocsp_signer(self, request: dict[str, Any]) -> dict[str, Any]:
        """Sign a delegated OCSP responder certificate (OCSPSigning, ocsp-nocheck) for a CA."""
        ca_name = str(request.get("ca") or "")
        if ca_name not in self.issuer.cas:
            raise RpcError(errors.UNKNOWN_CA, f"no CA named {ca_name!r}", 404)
        template = ocsp_signer_template(ca_name, self.ocsp_validity_days)
        req = Enrollment(
            request_id=f"ocsp-signer-{new_id()}",
            template=template.name,
            csr=_text(request, "csr"),
            actor=str(request.get("actor") or "revocation"),
        )
        try:
            leaf = self.issuer.prepare(req, template=template, roots_too=True)
        except Rejection as exc:
            raise _rpc_error(exc) from exc
        async with self.rt.unit_of_work() as uow:
            [serial] = await records.fresh_serials(
                uow.session, [(ca_name, x509.random_serial_number())]
            )
            cert = self.issuer.sign(leaf, serial)
            fields = issued_fields(cert, leaf, req)
            uow.session.add(records.issued_row(fields))
        return _response(json.loads(json.dumps(fields, default=str)))

    async def _old_certificate(self, key: str) -> dict[str, Any]:
        async with self.rt.db.session() as session:  # type: ignore[union-attr]
            row = await records.get_issued(session, key)
        if row is None:
            raise Rejection(errors.NOT_FOUND, f"no certificate {key!r} was issued here", 404)
        return records.issued_record(row)

    def _enrollment(self, request: dict[str, Any], **overrides: Any) -> Enrollment:
        sans = request.get("sans") or []
        if not isinstance(sans, list):
            raise RpcError(
                "invalid_request", 'sans must be a list like ["dns:www.example.com"]', 422
            )
        metadata = request.get("metadata") or {}
        values: dict[str, Any] = {
            "request_id": _text(request, "request_id") or new_id(),
            "template": str(request.get("template") or ""),
            "subject_dn": _text(request, "subject"),
            "sans": [str(s) for s in sans],
            "owner": _text(request, "owner"),
            "device": _text(request, "device"),
            "actor": str(request.get("actor") or "api"),
            "metadata": {str(k): str(v) for k, v in dict(metadata).items()},
            "ca": _text(request, "ca"),
        }
        values.update(overrides)
        return Enrollment(**values)

    async def _issue_with_server_key(
        self, req: Enrollment, password: str, renewal_of: str | None = None
    ) -> dict[str, Any]:
        template = self.issuer.templates.get(req.template)
        if template is None:
            raise Rejection(errors.UNKNOWN_TEMPLATE, f"no template named {req.template!r}", 404)
        if template.key_generation == KeyGeneration.DEVICE:
            raise Rejection(
                errors.KEY_GENERATION_NOT_ALLOWED,
                f"template {template.name}: key_generation is device; "
                "PFX enrollment is not allowed",
            )
        if template.keys.server_key_type in MLDSA:
            raise Rejection(
                errors.KEY_TYPE_NOT_ALLOWED,
                f"template {template.name}: keys.server_key_type {template.keys.server_key_type} "
                "cannot be carried in PKCS#12 yet; enroll with a CSR",
            )
        key = await asyncio.to_thread(generate_key, template.keys.server_key_type)
        outcome = await self._submit(Work(req, renewal_of=renewal_of, server_key=key.public_key()))
        result = _response(outcome.fields or {})
        if outcome.certificate is None or outcome.leaf is None:
            return {**result, "pkcs12_b64": None, "note": "already issued; the key is not kept"}
        blob = await asyncio.to_thread(
            build_pkcs12,
            key,
            outcome.certificate,
            outcome.leaf.ca.chain(),
            password,
            result.get("subject_dn") or req.request_id,
        )
        return {**result, "pkcs12_b64": base64.b64encode(blob).decode()}

    async def _issue(self, req: Enrollment, renewal_of: str | None = None) -> dict[str, Any]:
        outcome = await self._submit(Work(req, renewal_of=renewal_of))
        return _response(outcome.fields or {})

    async def _submit(self, work: Work) -> Outcome:
        outcome = await self._group.submit(work)
        if outcome.rejection is not None:
            raise outcome.rejection
        return outcome


def _response(fields: dict[str, Any]) -> dict[str, Any]:
    return {"id": fields["cert_id"], **fields}


def ocsp_signer_template(ca: str, validity_days: int) -> Template:
    """The built-in profile of a delegated OCSP responder (RFC 6960 4.2.2.2)."""
    return Template(
        name="ocsp-signer",
        description="Delegated OCSP responder",
        ca=ca,
        validity_days=validity_days,
        keys=KeyRules(
            rsa_min_bits=2048,
            ec_curves=["p256", "p384"],
            ed25519=True,
            ml_dsa=["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"],
        ),
        key_usage=["digital_signature"],
        extended_key_usage=["ocsp_signing"],
        ocsp_no_check=True,
        subject=SubjectRules(required=["CN"], allowed=["CN", "O", "OU"]),
        sans=SanRules(allowed_types=[]),
    )
