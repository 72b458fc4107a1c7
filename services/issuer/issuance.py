"""Issuance in two phases: check a request against its template, then sign exactly once.

``prepare`` turns a request into a ``LeafRequest`` or raises ``Rejection``; ``sign`` takes a
serial the caller has checked is unused at that CA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from services.issuer import errors, policy
from services.issuer.ca import CaRegistry
from services.issuer.csr import (
    check_proof_of_possession,
    parse_csr,
    refuse_ca_request,
    render_general_name,
    requested_sans,
)
from services.issuer.errors import Rejection
from services.issuer.templates import KeyGeneration, Template, TemplateCatalog
from services.issuer.x509build import LeafRequest, build_leaf, ca_extensions
from shared.clock import Clock, SystemClock
from shared.events import derived_id
from shared.pki import (
    describe_key,
    pem,
    public_key_sha256,
    render_serial,
    signature_algorithm_name,
    thumbprint,
)


@dataclass
class Enrollment:
    """What a requester asks for, from an event or an API call."""

    request_id: str
    template: str
    csr: str | None = None
    subject_dn: str | None = None
    sans: list[str] = field(default_factory=list)
    owner: str | None = None
    device: str | None = None
    actor: str = "system"
    metadata: Mapping[str, str] = field(default_factory=dict)
    ca: str | None = None

    def requester(self) -> dict[str, str | None]:
        return {"owner": self.owner, "device": self.device, "actor": self.actor}


class Issuer:
    def __init__(
        self,
        cas: CaRegistry,
        templates: TemplateCatalog,
        public_base_url: str,
        clock: Clock | None = None,
        delta_crls: bool = True,
    ) -> None:
        self.cas = cas
        self.templates = templates
        self.base_url = public_base_url
        self.clock = clock or SystemClock()
        self.delta_crls = delta_crls
        self._static: dict[str, list[x509.Extension[x509.ExtensionType]]] = {}

    def prepare(
        self,
        req: Enrollment,
        server_key: CertificatePublicKeyTypes | None = None,
        template: Template | None = None,
        roots_too: bool = False,
    ) -> LeafRequest:
        """Check ``req`` against its template (or the built-in ``template`` given).

        End entities come from issuing CAs only; ``roots_too`` lets a built-in profile (the
        delegated OCSP responder of a root) be signed by a root.
        """
        template = template or self.templates.get(req.template)
        if template is None:
            raise Rejection(errors.UNKNOWN_TEMPLATE, f"no template named {req.template!r}", 404)
        ca_name = req.ca or template.ca
        if ca_name not in self.cas or (self.cas.get(ca_name).is_root and not roots_too):
            raise Rejection(
                errors.UNKNOWN_CA, f"template {template.name}: no issuing CA named {ca_name!r}"
            )
        policy.check_requester(template, req.actor)
        policy.check_metadata(template, req.metadata)
        if server_key is not None:
            if template.key_generation == KeyGeneration.DEVICE:
                raise Rejection(
                    errors.KEY_GENERATION_NOT_ALLOWED,
                    f"template {template.name}: key_generation is device; "
                    "the server may not make the key",
                )
            public_key = server_key
            csr_sans: list[x509.GeneralName] = []
            csr_subject = None
        else:
            if not req.csr:
                raise Rejection(errors.CSR_REQUIRED, f"template {template.name}: a CSR is required")
            if template.key_generation == KeyGeneration.SERVER:
                raise Rejection(
                    errors.KEY_GENERATION_NOT_ALLOWED,
                    f"template {template.name}: key_generation is server; "
                    "CSR enrollment is not allowed",
                )
            csr = parse_csr(req.csr)
            check_proof_of_possession(csr)
            refuse_ca_request(csr)
            public_key = csr.public_key()
            csr_sans, csr_subject = requested_sans(csr), csr.subject
        key_type = policy.check_key(template, public_key)
        subject = policy.parse_subject(req.subject_dn) if req.subject_dn else csr_subject
        if subject is None:
            raise Rejection(
                errors.SUBJECT_ATTRIBUTE_MISSING, f"template {template.name}: a subject is required"
            )
        subject = policy.check_subject(template, subject, req.requester())
        asked = [policy.parse_san(text) for text in req.sans] if req.sans else csr_sans
        sans = policy.check_sans(template, asked, subject)
        return LeafRequest(
            template, self.cas.get(ca_name), subject, tuple(sans), public_key, key_type
        )

    def sign(self, leaf: LeafRequest, serial: int) -> x509.Certificate:
        static = self._static.get(leaf.ca.name)
        if static is None:
            static = self._static[leaf.ca.name] = ca_extensions(
                leaf.ca, self.base_url, self.delta_crls
            )
        return build_leaf(leaf, serial, self.base_url, self.clock.now(), static=static)


def cert_id_for(request_id: str) -> str:
    return derived_id("cert", request_id)


def issued_fields(cert: x509.Certificate, leaf: LeafRequest, req: Enrollment) -> dict[str, Any]:
    """Every ``CertIssued`` field that describes the certificate and its request."""
    key_type, key_size = describe_key(leaf.public_key)
    return {
        "request_id": req.request_id,
        "cert_id": cert_id_for(req.request_id),
        "serial": render_serial(cert.serial_number),
        "issuer_ca": leaf.ca.name,
        "issuer_dn": leaf.ca.subject_dn(),
        "subject_dn": leaf.subject.rfc4514_string(),
        "sans": [render_general_name(n) for n in leaf.sans],
        "thumbprint_sha1": thumbprint(cert, "sha1"),
        "thumbprint_sha256": thumbprint(cert, "sha256"),
        "public_key_sha256": public_key_sha256(cert),
        "not_before": cert.not_valid_before_utc,
        "not_after": cert.not_valid_after_utc,
        "template": leaf.template.name,
        "key_type": key_type,
        "key_size": key_size,
        "signature_algorithm": signature_algorithm_name(cert),
        "owner": req.owner,
        "device": req.device,
        "certificate_pem": pem(cert),
        "chain_pem": leaf.ca.chain_pem(),
        "metadata": dict(req.metadata),
    }


def issued_event_id(request_id: str) -> str:
    return derived_id("cert.issued", request_id)


def renewal_enrollment(
    old: dict[str, Any],
    *,
    request_id: str,
    template: str | None,
    ca: str | None,
    csr: str | None,
    actor: str,
) -> Enrollment:
    """The enrollment that renews ``old``: its subject, SANs, owner and metadata, a new key."""
    return Enrollment(
        request_id=request_id,
        template=template or old["template"],
        csr=csr,
        subject_dn=old["subject_dn"],
        sans=list(old.get("sans") or []),
        owner=old.get("owner"),
        device=old.get("device"),
        actor=actor,
        metadata=dict(old.get("metadata") or {}),
        ca=ca if ca else (None if template else old.get("issuer_ca")),
    )
