"""The public URLs written into certificates and CRLs (services/README.md)."""

from __future__ import annotations


def crl_url(base: str, ca: str) -> str:
    return f"{base.rstrip('/')}/crl/{ca}.crl"


def delta_crl_url(base: str, ca: str) -> str:
    return f"{base.rstrip('/')}/crl/{ca}-delta.crl"


def ca_issuers_url(base: str, ca: str) -> str:
    return f"{base.rstrip('/')}/ca/{ca}.crt"


def ocsp_url(base: str) -> str:
    return f"{base.rstrip('/')}/ocsp"
