"""One certificate in a store, whatever the store's format."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509

from shared import pki


@dataclass
class Entry:
    alias: str
    certificate: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)
    has_key: bool = False

    @property
    def serial(self) -> str:
        return pki.render_serial(self.certificate.serial_number)
