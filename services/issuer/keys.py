"""Key types by name (``ec-p256``, ``rsa-3072``, ``ed25519``, ``ml-dsa-65``) and key generation."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes

CURVES: dict[str, type[ec.EllipticCurve]] = {
    "p256": ec.SECP256R1,
    "p384": ec.SECP384R1,
    "p521": ec.SECP521R1,
}
CURVE_ALIASES = {
    "secp256r1": "p256",
    "prime256v1": "p256",
    "secp384r1": "p384",
    "secp521r1": "p521",
}

MLDSA: dict[str, Any] = {
    "ml-dsa-44": mldsa.MLDSA44PrivateKey,
    "ml-dsa-65": mldsa.MLDSA65PrivateKey,
    "ml-dsa-87": mldsa.MLDSA87PrivateKey,
}


def curve_name(curve: ec.EllipticCurve) -> str:
    """The short name of a curve (``p256``), or the curve's own name when it has none."""
    return CURVE_ALIASES.get(curve.name, curve.name)


def generate_key(spec: str) -> CertificateIssuerPrivateKeyTypes:
    """A new private key of type ``spec``."""
    spec = spec.lower()
    if spec.startswith("ec-"):
        name = CURVE_ALIASES.get(spec[3:], spec[3:])
        if name not in CURVES:
            raise ValueError(f"unknown curve in key type {spec!r}")
        return ec.generate_private_key(CURVES[name]())
    if spec.startswith("rsa-"):
        bits = int(spec[4:])
        if bits < 2048:
            raise ValueError("RSA keys must have at least 2048 bits")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    if spec == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if spec in MLDSA:
        return MLDSA[spec].generate()  # type: ignore[no-any-return]
    raise ValueError(f"unknown key type {spec!r}")


def key_spec(public_key: object) -> str:
    """The key type name of a public key, in the same vocabulary ``generate_key`` takes."""
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ec-{curve_name(public_key.curve)}"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    for spec, private in MLDSA.items():
        if type(public_key).__name__ == private.__name__.replace("Private", "Public"):
            return spec
    return type(public_key).__name__.lower()
