"""The OCSP responder recognises its CAs by the hashes a request names them by, whatever the
CA's key algorithm (asn1crypto's key classes do not know ML-DSA)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from services.revocation.ocsp import issuer_hashes


def _ca_and_leaf(ca_key, sign_hash):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hash test CA")])
    now = dt.datetime.now(dt.UTC)
    ca = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, sign_hash)
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(ca_key, sign_hash)
    )
    return ca, leaf


@pytest.mark.parametrize(
    ("make_key", "sign_hash"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()),
        (lambda: rsa.generate_private_key(65537, 2048), hashes.SHA256()),
        (ed25519.Ed25519PrivateKey.generate, None),
        (mldsa.MLDSA65PrivateKey.generate, None),
    ],
    ids=["ec", "rsa", "ed25519", "ml-dsa-65"],
)
@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_issuer_hashes_match_what_a_client_puts_in_its_request(make_key, sign_hash, algorithm):
    ca, leaf = _ca_and_leaf(make_key(), sign_hash)
    digest = hashes.SHA1() if algorithm == "sha1" else hashes.SHA256()
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca, digest).build()
    assert issuer_hashes(ca, algorithm) == (request.issuer_name_hash, request.issuer_key_hash)
