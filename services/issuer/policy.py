"""Template policy: which keys, subjects, SANs, requesters and metadata a template accepts.

Every check either passes or raises ``Rejection`` naming the template and the rule.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from services.issuer import errors
from services.issuer.errors import Rejection
from services.issuer.keys import MLDSA, curve_name, key_spec
from services.issuer.templates import Template

SHORT_NAMES = {
    NameOID.COMMON_NAME: "CN",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.LOCALITY_NAME: "L",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.COUNTRY_NAME: "C",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.STREET_ADDRESS: "STREET",
}
_OVERRIDES = {
    "emailAddress": NameOID.EMAIL_ADDRESS,
    "E": NameOID.EMAIL_ADDRESS,
    "serialNumber": NameOID.SERIAL_NUMBER,
}
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def check_key(template: Template, public_key: object) -> str:
    """The key's type name, if the template allows that type and size."""
    rules, where = template.keys, f"template {template.name}"
    if isinstance(public_key, rsa.RSAPublicKey):
        if rules.rsa_min_bits is None:
            raise Rejection(
                errors.KEY_TYPE_NOT_ALLOWED, f"{where}: keys.rsa_min_bits: RSA keys are not allowed"
            )
        if public_key.key_size < max(2048, rules.rsa_min_bits):
            raise Rejection(
                errors.KEY_TOO_WEAK,
                f"{where}: keys.rsa_min_bits requires RSA of at least "
                f"{max(2048, rules.rsa_min_bits)} bits, got {public_key.key_size}",
            )
        if public_key.public_numbers().e < 65537 or public_key.public_numbers().e % 2 == 0:
            raise Rejection(
                errors.KEY_MALFORMED, f"{where}: the RSA public exponent is weak or invalid"
            )
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        name = curve_name(public_key.curve)
        if name not in rules.ec_curves:
            raise Rejection(
                errors.CURVE_NOT_ALLOWED,
                f"{where}: keys.ec_curves allows "
                f"{', '.join(rules.ec_curves) or 'no curves'}, got {name}",
            )
    elif isinstance(public_key, ed25519.Ed25519PublicKey):
        if not rules.ed25519:
            raise Rejection(
                errors.KEY_TYPE_NOT_ALLOWED, f"{where}: keys.ed25519: Ed25519 keys are not allowed"
            )
    elif isinstance(public_key, dsa.DSAPublicKey | ed448.Ed448PublicKey):
        raise Rejection(
            errors.KEY_TYPE_NOT_ALLOWED,
            f"{where}: {type(public_key).__name__} keys are never allowed",
        )
    else:
        spec = key_spec(public_key)
        if spec not in MLDSA:
            raise Rejection(errors.KEY_TYPE_NOT_ALLOWED, f"{where}: unknown key type {spec}")
        if spec not in rules.ml_dsa:
            raise Rejection(
                errors.KEY_TYPE_NOT_ALLOWED,
                f"{where}: keys.ml_dsa allows {', '.join(rules.ml_dsa) or 'no ML-DSA'}, got {spec}",
            )
    return key_spec(public_key)


def parse_subject(dn: str) -> x509.Name:
    try:
        return x509.Name.from_rfc4514_string(dn, attr_name_overrides=_OVERRIDES)
    except ValueError as exc:
        raise Rejection(
            errors.SUBJECT_MALFORMED, f"the subject {dn!r} cannot be parsed: {exc}"
        ) from exc


def short_name(attr: x509.NameAttribute) -> str:
    return SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)


def check_subject(
    template: Template, subject: x509.Name, requester: Mapping[str, str | None]
) -> x509.Name:
    rules, where = template.subject, f"template {template.name}"
    present: dict[str, list[str]] = {}
    for attr in subject:
        name = short_name(attr)
        if name not in rules.allowed:
            raise Rejection(
                errors.SUBJECT_ATTRIBUTE_NOT_ALLOWED,
                f"{where}: subject.allowed does not include {name}",
            )
        present.setdefault(name, []).append(str(attr.value))
    for name in rules.required:
        if not present.get(name):
            raise Rejection(
                errors.SUBJECT_ATTRIBUTE_MISSING, f"{where}: subject.required needs {name}"
            )
    for name, pattern in rules.patterns.items():
        for value in present.get(name, []):
            if not re.fullmatch(pattern, value):
                raise Rejection(
                    errors.SUBJECT_PATTERN_MISMATCH,
                    f"{where}: subject.patterns.{name} {pattern!r} does not match {value!r}",
                )
    for name, field in rules.from_requester.items():
        expected = requester.get(field)
        if expected is None:
            continue
        if present.get(name, [expected]) != [expected]:
            raise Rejection(
                errors.SUBJECT_REQUESTER_MISMATCH,
                f"{where}: subject.from_requester.{name} must equal the requester's {field} "
                f"{expected!r}, got {present.get(name)}",
            )
    return subject


def parse_san(text: str) -> x509.GeneralName:
    kind, sep, value = text.partition(":")
    kind = kind.strip().lower()
    if not sep or not value:
        raise Rejection(errors.SAN_MALFORMED, f"SAN {text!r} must look like dns:NAME or email:ADDR")
    try:
        if kind == "dns":
            return x509.DNSName(value)
        if kind == "email":
            return x509.RFC822Name(value)
        if kind == "ip":
            return x509.IPAddress(ipaddress.ip_address(value))
        if kind == "uri":
            return x509.UniformResourceIdentifier(value)
    except ValueError as exc:
        raise Rejection(errors.SAN_MALFORMED, f"SAN {text!r} is not valid: {exc}") from exc
    raise Rejection(errors.SAN_MALFORMED, f"SAN type {kind!r} is not one of dns, email, ip, uri")


_KINDS: dict[type, str] = {
    x509.DNSName: "dns",
    x509.RFC822Name: "email",
    x509.IPAddress: "ip",
    x509.UniformResourceIdentifier: "uri",
}


def check_sans(
    template: Template, sans: list[x509.GeneralName], subject: x509.Name
) -> list[x509.GeneralName]:
    rules, where = template.sans, f"template {template.name}"
    if len(sans) > rules.max:
        raise Rejection(errors.SAN_TOO_MANY, f"{where}: sans.max is {rules.max}, got {len(sans)}")
    names: list[x509.GeneralName] = []
    types: set[str] = set()
    for name in dict.fromkeys(sans):
        kind = _KINDS.get(type(name), type(name).__name__)
        if kind not in rules.allowed_types:
            raise Rejection(
                errors.SAN_TYPE_NOT_ALLOWED,
                f"{where}: sans.allowed_types is [{', '.join(rules.allowed_types)}], got {kind}",
            )
        value = str(name.value)
        if kind == "dns":
            _check_dns(where, value, rules.dns_suffixes)
        if kind == "email":
            _check_email(where, value, rules.email_domains)
        types.add(kind)
        names.append(name)
    for kind in rules.required_types:
        if kind not in types:
            raise Rejection(errors.SAN_REQUIRED, f"{where}: sans.required_types needs a {kind} SAN")
    if rules.cn_in_dns:
        cns = [str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        dns = {str(n.value).lower() for n in names if isinstance(n, x509.DNSName)}
        for cn in cns:
            if cn.lower() not in dns:
                raise Rejection(
                    errors.SAN_REQUIRED, f"{where}: sans.cn_in_dns needs the CN {cn!r} as a dns SAN"
                )
    return names


def _check_dns(where: str, value: str, suffixes: list[str]) -> None:
    host = value[2:] if value.startswith("*.") else value
    if not host or not all(_DNS_LABEL.match(label) for label in host.split(".")):
        raise Rejection(
            errors.SAN_MALFORMED, f"{where}: dns SAN {value!r} is not a valid host name"
        )
    if suffixes and not any(
        host.lower() == s.lower().lstrip(".") or host.lower().endswith("." + s.lower().lstrip("."))
        for s in suffixes
    ):
        raise Rejection(
            errors.SAN_DNS_SUFFIX_NOT_ALLOWED,
            f"{where}: sans.dns_suffixes allows [{', '.join(suffixes)}], got {value}",
        )


def _check_email(where: str, value: str, domains: list[str]) -> None:
    if not _EMAIL.match(value):
        raise Rejection(errors.SAN_MALFORMED, f"{where}: email SAN {value!r} is not an address")
    domain = value.rsplit("@", 1)[1].lower()
    if domains and domain not in [d.lower() for d in domains]:
        raise Rejection(
            errors.SAN_EMAIL_DOMAIN_NOT_ALLOWED,
            f"{where}: sans.email_domains allows [{', '.join(domains)}], got {domain}",
        )


def check_requester(template: Template, actor: str) -> None:
    if template.enroll_roles and not any(fnmatch.fnmatch(actor, p) for p in template.enroll_roles):
        raise Rejection(
            errors.NOT_AUTHORIZED,
            f"template {template.name}: enroll_roles does not admit {actor!r}",
            status=403,
        )


def check_metadata(template: Template, metadata: Mapping[str, str]) -> None:
    missing = [f for f in template.required_metadata if not metadata.get(f)]
    if missing:
        raise Rejection(
            errors.METADATA_MISSING,
            f"template {template.name}: required_metadata needs {', '.join(missing)}",
        )
