from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class IssuerSettings(CommonSettings):
    issuer_database_url: str | None = None
    issuer_key_dir: Path | None = None
    ca_passphrase: str | None = Field(default=None, repr=False)
    ca_passphrase_file: Path | None = None
    templates_file: Path = Path("infra/templates.yaml")
    crl_validity_hours: float = 24.0
    crl_refresh_hours: float = 6.0
    crl_debounce_seconds: float = 0.25
    crl_max_delay_seconds: float = 2.0
    ocsp_signer_validity_days: int = 30
    issuance_batch_size: int = 500
    issuer_max_wait: float = Field(
        default=0.25, description="How long a pull waits to fill a batch: a lone event's latency."
    )
    delta_crls: bool = True
    pkcs11_module: str = "/usr/lib/softhsm/libsofthsm2.so"
    pkcs11_token: str | None = None
    pkcs11_pin: str | None = Field(default=None, repr=False)
    pkcs11_pin_file: Path | None = None
    pkcs11_cas: list[str] = Field(
        default_factory=list, description="CAs whose keys live on the PKCS#11 token (EC or RSA)."
    )
    issuer_cas: list[str] = Field(
        default_factory=list,
        description="Which CAs of the built-in hierarchy to hold (with their parents); empty: all.",
    )

    def issuer_db_url(self) -> str:
        return self.database_url_for("issuer", self.issuer_database_url)

    def key_dir(self) -> Path:
        return self.issuer_key_dir or self.var_dir / "issuer" / "keys"

    def templates_path(self) -> Path:
        path = self.templates_file
        if path.is_absolute() or path.exists():
            return path
        return REPO_ROOT / path

    def hsm_pin(self) -> str:
        if self.pkcs11_pin:
            return self.pkcs11_pin
        if self.pkcs11_pin_file:
            return self.pkcs11_pin_file.read_text().strip()
        raise ValueError(
            "CERTBUS_PKCS11_PIN or CERTBUS_PKCS11_PIN_FILE is required with CERTBUS_PKCS11_CAS"
        )

    def passphrase(self) -> bytes:
        """The CA key passphrase: environment, secret file, or one generated on first start."""
        if self.ca_passphrase:
            return self.ca_passphrase.encode()
        path = self.ca_passphrase_file or self.var_dir / "issuer" / "ca-passphrase"
        if path.exists():
            return path.read_bytes().strip()
        if self.ca_passphrase_file:
            raise FileNotFoundError(f"CA passphrase file {path} does not exist")
        path.parent.mkdir(parents=True, exist_ok=True)
        value = secrets.token_urlsafe(32).encode()
        write_secret(path, value)
        return value


def write_secret(path: Path, data: bytes) -> None:
    """Create a file only its owner can read, refusing to overwrite one that exists."""

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
