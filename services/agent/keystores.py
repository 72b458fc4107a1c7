"""Key stores in one file: PKCS#12 (one key entry under a friendly name) and Java KeyStore."""

from __future__ import annotations

from pathlib import Path

import jks
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from services.agent.entry import Entry
from services.agent.errors import JobError
from services.agent.keys import write_private

KDF_ROUNDS = 50_000

_PKCS12_KEYS = (
    rsa.RSAPrivateKey,
    dsa.DSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
)


def _pkcs12_key(key: PrivateKeyTypes | None) -> pkcs12.PKCS12PrivateKeyTypes | None:
    """``key`` if PKCS#12 can hold it; refused as ``serialize_key_and_certificates`` would."""
    if key is None or isinstance(key, _PKCS12_KEYS):
        return key
    raise TypeError("Key must be RSA, DSA, EllipticCurve, ED25519, or ED448 private key, or None.")


class Pkcs12File:
    """A ``.p12`` holding one private key, its certificate (named by alias) and the chain."""

    def __init__(self, path: Path, password: str) -> None:
        self.path = path
        self.password = password.encode()

    def exists(self) -> bool:
        """An emptied PKCS#12 store has no file: its directory is what remains."""
        return self.path.is_file() or self.path.parent.is_dir()

    def create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _load(self) -> pkcs12.PKCS12KeyAndCertificates | None:
        if not self.path.is_file():
            return None
        try:
            return pkcs12.load_pkcs12(self.path.read_bytes(), self.password or None)
        except ValueError as exc:
            raise JobError("store_unreadable", f"{self.path}: {exc} (wrong password?)") from exc

    def entries(self) -> list[Entry]:
        bundle = self._load()
        if bundle is None or bundle.cert is None:
            return []
        alias = (bundle.cert.friendly_name or b"").decode() or self.path.stem
        chain = [c.certificate for c in bundle.additional_certs]
        return [Entry(alias, bundle.cert.certificate, chain, bundle.key is not None)]

    def get(self, alias: str) -> Entry | None:
        return next((e for e in self.entries() if e.alias == alias), None)

    def add(
        self,
        alias: str,
        cert: x509.Certificate,
        key: PrivateKeyTypes | None,
        chain: list[x509.Certificate],
    ) -> None:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(KDF_ROUNDS)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(self.password)
            if self.password
            else serialization.NoEncryption()
        )
        data = pkcs12.serialize_key_and_certificates(
            alias.encode(),
            _pkcs12_key(key),
            cert,
            chain or None,
            encryption,
        )
        write_private(self.path, data)

    def remove(self, alias: str) -> bool:
        if self.get(alias) is None:
            return False
        self.path.unlink()
        return True


class JavaKeyStore:
    """A JKS file: private key entries (key + chain) and trusted certificates, by alias."""

    def __init__(self, path: Path, password: str) -> None:
        self.path = path
        self.password = password

    def exists(self) -> bool:
        return self.path.is_file()

    def create(self) -> None:
        if not self.exists():
            self._save(jks.KeyStore.new("jks", []))

    def _load(self) -> jks.KeyStore:
        if not self.exists():
            return jks.KeyStore.new("jks", [])
        try:
            return jks.KeyStore.load(str(self.path), self.password)
        except (jks.util.KeystoreSignatureException, jks.util.DecryptionFailureException) as exc:
            raise JobError("store_unreadable", f"{self.path}: {exc} (wrong password?)") from exc

    def _save(self, store: jks.KeyStore) -> None:
        write_private(self.path, store.saves(self.password))

    def entries(self) -> list[Entry]:
        store, out = self._load(), []
        for alias, pke in sorted(store.private_keys.items()):
            certs = [x509.load_der_x509_certificate(der) for _, der in pke.cert_chain]
            if certs:
                out.append(Entry(alias, certs[0], certs[1:], True))
        for alias, tce in sorted(store.certs.items()):
            out.append(Entry(alias, x509.load_der_x509_certificate(tce.cert), [], False))
        return out

    def get(self, alias: str) -> Entry | None:
        return next((e for e in self.entries() if e.alias == alias), None)

    def add(
        self,
        alias: str,
        cert: x509.Certificate,
        key: PrivateKeyTypes | None,
        chain: list[x509.Certificate],
    ) -> None:
        store = self._load()
        store.entries.pop(alias, None)
        der = [c.public_bytes(serialization.Encoding.DER) for c in (cert, *chain)]
        if key is None:
            entry = jks.TrustedCertEntry.new(alias, der[0])
        else:
            pkcs8 = key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            entry = jks.PrivateKeyEntry.new(alias, der, pkcs8, "pkcs8")
        store.entries[alias] = entry
        self._save(store)

    def remove(self, alias: str) -> bool:
        store = self._load()
        if alias not in store.entries:
            return False
        del store.entries[alias]
        self._save(store)
        return True
