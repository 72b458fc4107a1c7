"""Certificate authorities: the hierarchy created on first start and kept in the key directory.

Each CA is a certificate plus a signer. Keys are encrypted PKCS#8 files (mode 0600) next to
their certificates; a second start loads them instead of creating new ones.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from services.issuer import urls
from services.issuer.keys import generate_key, key_spec
from services.issuer.signer import KeySigner, Signer, load_encrypted_key, save_encrypted_key
from shared.clock import Clock, SystemClock
from shared.pki import pem

log = logging.getLogger("certbus.issuer.ca")


@dataclass(frozen=True)
class CaSpec:
    name: str
    key_type: str
    validity_days: int
    parent: str | None = None
    common_name: str | None = None


DEFAULT_CAS: tuple[CaSpec, ...] = (
    CaSpec("root", "ec-p384", 3652, None, "certbus Root CA"),
    CaSpec("issuing-ec", "ec-p256", 1826, "root", "certbus Issuing CA EC"),
    CaSpec("issuing-rsa", "rsa-3072", 1826, "root", "certbus Issuing CA RSA"),
    CaSpec("issuing-ed25519", "ed25519", 1826, "root", "certbus Issuing CA Ed25519"),
    CaSpec("root-pq", "ml-dsa-87", 3652, None, "certbus Root CA ML-DSA"),
    CaSpec("issuing-mldsa", "ml-dsa-65", 1826, "root-pq", "certbus Issuing CA ML-DSA"),
)


@dataclass
class CertificateAuthority:
    name: str
    certificate: x509.Certificate
    signer: Signer
    parent: CertificateAuthority | None = None
    created: bool = False
    backend: str = "file"
    children: list[str] = field(default_factory=list)
    external_chain: list[x509.Certificate] = field(default_factory=list)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_root(self) -> bool:
        return self.parent is None and not self.external_chain

    @property
    def key_type(self) -> str:
        return key_spec(self.certificate.public_key())

    def chain(self) -> list[x509.Certificate]:
        """This CA's certificate, then its parents' up to the root."""
        out: list[x509.Certificate] = []
        ca: CertificateAuthority | None = self
        while ca is not None:
            out.append(ca.certificate)
            out.extend(ca.external_chain)
            ca = ca.parent
        return out

    def chain_pem(self) -> list[str]:
        if "chain_pem" not in self._cache:
            self._cache["chain_pem"] = [pem(c) for c in self.chain()]
        return list(self._cache["chain_pem"])

    def subject_dn(self) -> str:
        if "subject_dn" not in self._cache:
            self._cache["subject_dn"] = self.certificate.subject.rfc4514_string()
        return self._cache["subject_dn"]  # type: ignore[no-any-return]

    def ski(self) -> x509.SubjectKeyIdentifier:
        if "ski" not in self._cache:
            self._cache["ski"] = self.certificate.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
        return self._cache["ski"]  # type: ignore[no-any-return]


class CaRegistry:
    """The CAs this issuer holds, by name."""

    def __init__(self, cas: dict[str, CertificateAuthority]) -> None:
        self._cas = cas

    def get(self, name: str) -> CertificateAuthority:
        return self._cas[name]

    def __contains__(self, name: object) -> bool:
        return name in self._cas

    def all(self) -> list[CertificateAuthority]:
        return list(self._cas.values())

    def issuing(self) -> list[CertificateAuthority]:
        return [ca for ca in self._cas.values() if not ca.is_root]

    def add(self, ca: CertificateAuthority) -> None:
        self._cas[ca.name] = ca


class KeyStore(Protocol):
    """Where CA keys live: encrypted files, or an HSM."""

    backend: str

    def exists(self, name: str) -> bool: ...

    def create(self, name: str, key_type: str) -> Signer: ...

    def load(self, name: str) -> Signer: ...


class FileKeys:
    backend = "file"

    def __init__(self, key_dir: Path, passphrase: bytes) -> None:
        self._dir = key_dir
        self._passphrase = passphrase

    def exists(self, name: str) -> bool:
        return key_path(self._dir, name).exists()

    def create(self, name: str, key_type: str) -> Signer:
        key = generate_key(key_type)
        save_encrypted_key(key_path(self._dir, name), key, self._passphrase)
        return KeySigner(key)

    def load(self, name: str) -> Signer:
        return KeySigner(load_encrypted_key(key_path(self._dir, name), self._passphrase))


def open_hierarchy(
    key_dir: Path,
    passphrase: bytes,
    specs: tuple[CaSpec, ...] | list[CaSpec],
    public_base_url: str,
    clock: Clock | None = None,
    hsm: KeyStore | None = None,
    hsm_cas: tuple[str, ...] | list[str] = (),
) -> CaRegistry:
    """Load every CA in ``specs`` from ``key_dir``, creating the ones that do not exist yet.

    The keys of the CAs named in ``hsm_cas`` live in ``hsm``; the others in encrypted files.
    """
    clock = clock or SystemClock()
    files = FileKeys(key_dir, passphrase)
    key_dir.mkdir(parents=True, exist_ok=True)
    key_dir.chmod(0o700)
    registry = CaRegistry({})
    wanted = {s.name: s for s in specs}
    imported = {e["name"] for e in imported_entries(key_dir)}
    for spec in _parents_first(specs):
        if spec.name in imported:
            continue
        if spec.parent and spec.parent not in wanted:
            raise ValueError(f"CA {spec.name} names unknown parent {spec.parent}")
        parent = registry.get(spec.parent) if spec.parent else None
        store: KeyStore = files
        if spec.name in hsm_cas:
            if hsm is None:
                raise ValueError(f"CA {spec.name} keeps its key in an HSM, but none is configured")
            store = hsm
        registry.add(_load_or_create(key_dir, store, spec, parent, public_base_url, clock))
    for ca in load_imported(key_dir, files, hsm):
        registry.add(ca)
    for ca in registry.all():
        if ca.parent:
            ca.parent.children.append(ca.name)
    return registry


def select_cas(names: list[str] | None, specs: tuple[CaSpec, ...] = DEFAULT_CAS) -> list[CaSpec]:
    """The specs named (all when ``names`` is empty), with the parents they need."""
    if not names:
        return list(specs)
    by_name = {s.name: s for s in specs}
    chosen: dict[str, CaSpec] = {}
    for name in names:
        spec = by_name.get(name)
        if spec is None:
            raise ValueError(f"unknown CA {name!r}; known: {', '.join(by_name)}")
        while spec is not None:
            chosen.setdefault(spec.name, spec)
            spec = by_name.get(spec.parent) if spec.parent else None
    return [s for s in specs if s.name in chosen]


def _parents_first(specs: tuple[CaSpec, ...] | list[CaSpec]) -> list[CaSpec]:
    roots = [s for s in specs if not s.parent]
    return roots + [s for s in specs if s.parent]


def key_path(key_dir: Path, name: str) -> Path:
    return key_dir / f"{name}.key.pem"


def cert_path(key_dir: Path, name: str) -> Path:
    return key_dir / f"{name}.crt.pem"


def _load_or_create(
    key_dir: Path,
    store: KeyStore,
    spec: CaSpec,
    parent: CertificateAuthority | None,
    base_url: str,
    clock: Clock,
) -> CertificateAuthority:
    cp = cert_path(key_dir, spec.name)
    if cp.exists():
        cert = x509.load_pem_x509_certificate(cp.read_bytes())
        signer = store.load(spec.name)
        if signer.public_key() != cert.public_key():
            raise ValueError(
                f"the {store.backend} key of CA {spec.name} does not match its certificate"
            )
        return CertificateAuthority(spec.name, cert, signer, parent, backend=store.backend)
    signer = store.create(spec.name, spec.key_type)
    cert = build_ca_certificate(spec, signer, parent, base_url, clock.now())
    cp.write_bytes(pem(cert).encode())
    log.info("created CA %s (%s, key in %s)", spec.name, spec.key_type, store.backend)
    return CertificateAuthority(
        spec.name, cert, signer, parent, created=True, backend=store.backend
    )


def ca_name(spec: CaSpec) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "certbus"),
            x509.NameAttribute(NameOID.COMMON_NAME, spec.common_name or spec.name),
        ]
    )


def build_ca_certificate(
    spec: CaSpec,
    signer: Signer,
    parent: CertificateAuthority | None,
    base_url: str,
    now: datetime,
) -> x509.Certificate:
    """A root (self-signed) or an issuing CA certificate signed by ``parent``."""
    subject = ca_name(spec)
    public_key = signer.public_key()
    not_before = now - timedelta(minutes=5)
    not_after = now + timedelta(days=spec.validity_days)
    issuer_signer, issuer_name = signer, subject
    builder = x509.CertificateBuilder().subject_name(subject).public_key(public_key)
    builder = builder.serial_number(x509.random_serial_number())
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
    )
    if parent is not None:
        issuer_signer, issuer_name = parent.signer, parent.certificate.subject
        not_after = min(not_after, parent.certificate.not_valid_after_utc)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(parent.ski()),
            critical=False,
        )
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        )
        builder = builder.add_extension(
            x509.CRLDistributionPoints(
                [
                    x509.DistributionPoint(
                        [x509.UniformResourceIdentifier(urls.crl_url(base_url, parent.name))],
                        None,
                        None,
                        None,
                    )
                ]
            ),
            critical=False,
        )
        builder = builder.add_extension(
            x509.AuthorityInformationAccess(
                [
                    x509.AccessDescription(
                        x509.AuthorityInformationAccessOID.CA_ISSUERS,
                        x509.UniformResourceIdentifier(urls.ca_issuers_url(base_url, parent.name)),
                    )
                ]
            ),
            critical=False,
        )
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    builder = builder.add_extension(
        x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        ),
        critical=True,
    )
    builder = (
        builder.issuer_name(issuer_name).not_valid_before(not_before).not_valid_after(not_after)
    )
    return issuer_signer.sign_certificate(builder)


MANIFEST = "imported.json"


def imported_entries(key_dir: Path) -> list[dict[str, Any]]:
    path = key_dir / MANIFEST
    return json.loads(path.read_text()) if path.exists() else []  # type: ignore[no-any-return]


def load_imported(
    key_dir: Path, files: FileKeys, hsm: KeyStore | None
) -> list[CertificateAuthority]:
    out = []
    for entry in imported_entries(key_dir):
        store = files if entry["backend"] == "file" else hsm
        if store is None:
            raise ValueError(
                f"imported CA {entry['name']} keeps its key in an HSM, but none is configured"
            )
        cert = x509.load_pem_x509_certificate(cert_path(key_dir, entry["name"]).read_bytes())
        chain = [x509.load_pem_x509_certificate(c.encode()) for c in entry["chain_pem"]]
        signer = store.load(entry["name"])
        out.append(
            CertificateAuthority(
                entry["name"], cert, signer, None, backend=store.backend, external_chain=chain
            )
        )
    return out
