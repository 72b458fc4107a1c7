"""A CA key inside an HSM, reached through PKCS#11 (tested against SoftHSM2).

``cryptography`` cannot sign with a key it does not hold, so a certificate or CRL is built
and signed with a throwaway key of the same algorithm, its to-be-signed bytes are signed in
the HSM, and the outer structure is reassembled with the HSM's signature. The result is
checked against the CA's public key before it leaves this module.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pkcs11
from asn1crypto import crl as asn1_crl
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pkcs11.util.rsa import encode_rsa_public_key

from services.issuer.signer import hash_for

_CURVES = {"p256": ("secp256r1", ec.SECP256R1), "p384": ("secp384r1", ec.SECP384R1)}


@dataclass(frozen=True)
class HsmConfig:
    module: str
    token_label: str
    pin: str


class Pkcs11Signer:
    """Signs with the private key labelled ``label`` on the token; the key never leaves it."""

    def __init__(self, session: Any, label: str) -> None:
        self._session = session
        self._lock = threading.Lock()
        self._private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=label)
        if self._private.key_type == KeyType.EC:
            der = encode_ec_public_key(public)
        else:
            der = encode_rsa_public_key(public)
        loaded = serialization.load_der_public_key(der)
        if isinstance(loaded, rsa.RSAPublicKey):
            self._public: CertificateIssuerPublicKeyTypes = loaded
        elif isinstance(loaded, ec.EllipticCurvePublicKey):
            # PKCS#11 carries only the point; DER SPKI from the helper is the named-curve form.
            self._public = loaded
        else:  # pragma: no cover - generate_hsm_key only makes EC and RSA keys
            raise ValueError(f"unsupported HSM key type {type(loaded).__name__}")
        self.label = label

    def public_key(self) -> CertificateIssuerPublicKeyTypes:
        return self._public

    def _throwaway(self) -> Any:
        if isinstance(self._public, ec.EllipticCurvePublicKey):
            return ec.generate_private_key(type(self._public.curve)())
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def _sign(self, tbs: bytes) -> bytes:
        digest_alg = hash_for(self._public) or hashes.SHA256()
        with self._lock:
            if isinstance(self._public, ec.EllipticCurvePublicKey):
                h = hashes.Hash(digest_alg)
                h.update(tbs)
                raw = self._private.sign(h.finalize(), mechanism=Mechanism.ECDSA)
                half = len(raw) // 2
                return encode_dss_signature(
                    int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
                )
            mechanism = (
                Mechanism.SHA384_RSA_PKCS
                if isinstance(digest_alg, hashes.SHA384)
                else Mechanism.SHA256_RSA_PKCS
            )
            return bytes(self._private.sign(tbs, mechanism=mechanism))

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        draft = builder.sign(self._throwaway(), hash_for(self._public) or hashes.SHA256())
        signature = self._sign(draft.tbs_certificate_bytes)
        outer = asn1_x509.Certificate.load(draft.public_bytes(serialization.Encoding.DER))
        signed = asn1_x509.Certificate(
            {
                "tbs_certificate": outer["tbs_certificate"],
                "signature_algorithm": outer["signature_algorithm"],
                "signature_value": signature,
            }
        )
        cert = x509.load_der_x509_certificate(signed.dump())
        _verify(
            self._public, cert.signature, cert.tbs_certificate_bytes, cert.signature_hash_algorithm
        )
        return cert

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        draft = builder.sign(self._throwaway(), hash_for(self._public) or hashes.SHA256())
        signature = self._sign(draft.tbs_certlist_bytes)
        outer = asn1_crl.CertificateList.load(draft.public_bytes(serialization.Encoding.DER))
        signed = asn1_crl.CertificateList(
            {
                "tbs_cert_list": outer["tbs_cert_list"],
                "signature_algorithm": outer["signature_algorithm"],
                "signature": signature,
            }
        )
        crl = x509.load_der_x509_crl(signed.dump())
        if not crl.is_signature_valid(self._public):  # type: ignore[arg-type]
            raise ValueError("the HSM's CRL signature does not verify with the CA key")
        return crl

    def __repr__(self) -> str:
        return f"Pkcs11Signer({self.label!r})"


def _verify(public: Any, signature: bytes, data: bytes, algorithm: Any) -> None:
    if isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, data, ec.ECDSA(algorithm))
    else:
        public.verify(signature, data, padding.PKCS1v15(), algorithm)


def open_session(config: HsmConfig) -> Any:
    lib = pkcs11.lib(config.module)
    token = lib.get_token(token_label=config.token_label)
    return token.open(user_pin=config.pin, rw=True)


def has_key(session: Any, label: str) -> bool:
    try:
        session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        return True
    except (pkcs11.NoSuchKey, pkcs11.MultipleObjectsReturned):
        return False


def generate_hsm_key(session: Any, label: str, key_type: str) -> None:
    """Make a non-extractable key pair on the token under ``label``."""
    if key_type.startswith("ec-"):
        curve = _CURVES[key_type[3:]][0]
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters(curve)}, local=True
        )
        params.generate_keypair(
            store=True,
            label=label,
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
    elif key_type.startswith("rsa-"):
        session.generate_keypair(
            KeyType.RSA,
            int(key_type[4:]),
            store=True,
            label=label,
            private_template={Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False},
        )
    else:
        raise ValueError(f"the PKCS#11 backend makes EC and RSA keys, not {key_type}")


class HsmKeys:
    """CA keys on a PKCS#11 token, one key pair per CA, labelled with the CA's name."""

    backend = "pkcs11"

    def __init__(self, session: Any) -> None:
        self._session = session

    def exists(self, name: str) -> bool:
        return has_key(self._session, name)

    def create(self, name: str, key_type: str) -> Pkcs11Signer:
        if not has_key(self._session, name):
            generate_hsm_key(self._session, name, key_type)
        return Pkcs11Signer(self._session, name)

    def load(self, name: str) -> Pkcs11Signer:
        return Pkcs11Signer(self._session, name)
