"""A CRL of 1,000,000 entries: build + sign with the issuer's code, against raw cryptography.

The baseline builds the same entries with plain cryptography calls (one RevokedCertificate
per entry, the whole list passed to the builder's constructor, signed with the same key).
The naive add_revoked_certificate loop is measured on a small slice to show why that matters.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from services.issuer.ca import open_hierarchy, select_cas
from services.issuer.crl import CrlEntry, build_crl
from shared.pki import RevocationReason
from tests.bench.common import Timer, report

ENTRIES = int(os.environ.get("CERTBUS_BENCH_CRL_ENTRIES", "1000000"))
NAIVE = 20_000


def main() -> dict:
    ca = open_hierarchy(
        Path(tempfile.mkdtemp()), b"bench", select_cas(["issuing-ec"]), "http://pki.test"
    ).get("issuing-ec")
    now = datetime.now(UTC).replace(microsecond=0)
    reasons = list(RevocationReason)
    reasons.remove(RevocationReason.REMOVE_FROM_CRL)
    entries = [
        CrlEntry(0x10_0000_0000_0000 + i, now - timedelta(seconds=i), reasons[i % len(reasons)])
        for i in range(ENTRIES)
    ]

    with Timer() as ours:
        crl = build_crl(ca, entries, 1, now, now + timedelta(days=1), "http://pki.test")
        der = crl.public_bytes(Encoding.DER)

    key = ca.signer._key  # noqa: SLF001 - the baseline signs with the very same key

    def raw(n: int) -> x509.CertificateRevocationList:
        revoked = []
        for e in entries[:n]:
            b = (
                x509.RevokedCertificateBuilder()
                .serial_number(e.serial)
                .revocation_date(e.revoked_at)
            )
            if e.reason != RevocationReason.UNSPECIFIED:
                b = b.add_extension(x509.CRLReason(e.reason.x509_flag), critical=False)
            revoked.append(b.build())
        builder = x509.CertificateRevocationListBuilder(
            issuer_name=ca.certificate.subject,
            last_update=now,
            next_update=now + timedelta(days=1),
            extensions=[x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(1))],
            revoked_certificates=revoked,
        )
        return builder.sign(key, hashes.SHA256())

    with Timer() as baseline:
        raw_der = raw(ENTRIES).public_bytes(Encoding.DER)

    with Timer() as naive:
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(ca.certificate.subject)
            .last_update(now)
            .next_update(now + timedelta(days=1))
        )
        for e in entries[:NAIVE]:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(e.serial)
                .revocation_date(e.revoked_at)
                .build()
            )
        builder.sign(key, hashes.SHA256())

    parsed = x509.load_der_x509_crl(der)
    assert len(parsed) == ENTRIES and parsed.is_signature_valid(ca.certificate.public_key())
    return report(
        "crl_million",
        {
            "entries": ENTRIES,
            "certbus_build_sign_seconds": ours.seconds,
            "baseline_raw_cryptography_seconds": baseline.seconds,
            "ratio_certbus_over_baseline_time": ours.seconds / baseline.seconds,
            "crl_der_megabytes": len(der) / 1e6,
            "baseline_der_megabytes": len(raw_der) / 1e6,
            f"naive_add_revoked_loop_{NAIVE}_entries_seconds": naive.seconds,
            "naive_loop_projected_seconds_for_all_entries (quadratic)": naive.seconds
            * (ENTRIES / NAIVE) ** 2,
        },
    )


if __name__ == "__main__":
    main()
