from __future__ import annotations

import pytest
from cryptography import x509

from shared.pki import RevocationReason, parse_serial, render_serial


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (5, RevocationReason.CESSATION_OF_OPERATION),
        ("5", RevocationReason.CESSATION_OF_OPERATION),
        ("cessationOfOperation", RevocationReason.CESSATION_OF_OPERATION),
        ("keyCompromise", RevocationReason.KEY_COMPROMISE),
        ("KEY_COMPROMISE", RevocationReason.KEY_COMPROMISE),
        ("cACompromise", RevocationReason.CA_COMPROMISE),
        ("certificate-hold", RevocationReason.CERTIFICATE_HOLD),
        ("removeFromCRL", RevocationReason.REMOVE_FROM_CRL),
        (10, RevocationReason.AA_COMPROMISE),
    ],
)
def test_revocation_reasons_parse_from_numbers_and_rfc_names(given, expected) -> None:
    assert RevocationReason.parse(given) is expected


@pytest.mark.parametrize("bad", [7, "11", "retired", ""])
def test_unknown_revocation_reasons_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        RevocationReason.parse(bad)


def test_every_reason_maps_to_an_x509_flag_and_back() -> None:
    for reason in RevocationReason:
        assert RevocationReason.from_x509(reason.x509_flag) is reason
    assert RevocationReason.from_x509(x509.ReasonFlags.superseded) is RevocationReason.SUPERSEDED


def test_serials_render_as_lower_case_hex_and_parse_back_with_or_without_colons() -> None:
    serial = 0x1A2B3C4D5E6F7081
    assert render_serial(serial) == "1a2b3c4d5e6f7081"
    assert parse_serial("1A:2B:3C:4D:5E:6F:70:81") == serial
