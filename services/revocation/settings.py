from __future__ import annotations

from shared.settings import CommonSettings


class RevocationSettings(CommonSettings):
    revocation_database_url: str | None = None
    public_host: str = "127.0.0.1"
    public_port: int = 8081
    crl_max_age_seconds: int = 60
    """Upper bound of a CRL's Cache-Control max-age; nextUpdate bounds it further."""
    ocsp_validity_seconds: int = 3600
    """How long an OCSP answer is valid (nextUpdate - thisUpdate)."""
    ocsp_cache_seconds: float = 60.0
    """Longest an answer or status stays in the responder's caches (changes drop it at once)."""
    ocsp_signer_validity_days: int = 30
    ocsp_signer_renew_before_days: int = 7
    consumer_ack_wait_seconds: float = 30.0
    """How long a delivered event may stay unacknowledged before JetStream redelivers it."""
    ocsp_key_passphrase: str | None = None
    """Protects the OCSP signing keys at rest; generated into var_dir when unset."""

    def db_url(self) -> str:
        return self.database_url_for("revocation", self.revocation_database_url)
