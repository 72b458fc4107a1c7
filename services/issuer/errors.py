"""Why a request is refused: a stable code and a message naming the rule that failed."""

from __future__ import annotations


class Rejection(Exception):
    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


MALFORMED_EVENT = "malformed_event"
CSR_MALFORMED = "csr_malformed"
CSR_REQUIRED = "csr_required"
CSR_SIGNATURE_INVALID = "csr_signature_invalid"
CA_REQUEST_REFUSED = "ca_request_refused"
KEY_TOO_WEAK = "key_too_weak"
KEY_TYPE_NOT_ALLOWED = "key_type_not_allowed"
CURVE_NOT_ALLOWED = "curve_not_allowed"
KEY_MALFORMED = "key_malformed"
KEY_GENERATION_NOT_ALLOWED = "key_generation_not_allowed"
UNKNOWN_TEMPLATE = "unknown_template"
UNKNOWN_CA = "unknown_ca"
SUBJECT_ATTRIBUTE_MISSING = "subject_attribute_missing"
SUBJECT_ATTRIBUTE_NOT_ALLOWED = "subject_attribute_not_allowed"
SUBJECT_PATTERN_MISMATCH = "subject_pattern_mismatch"
SUBJECT_REQUESTER_MISMATCH = "subject_requester_mismatch"
SUBJECT_MALFORMED = "subject_malformed"
SAN_TYPE_NOT_ALLOWED = "san_type_not_allowed"
SAN_REQUIRED = "san_required"
SAN_MALFORMED = "san_malformed"
SAN_DNS_SUFFIX_NOT_ALLOWED = "san_dns_suffix_not_allowed"
SAN_EMAIL_DOMAIN_NOT_ALLOWED = "san_email_domain_not_allowed"
SAN_TOO_MANY = "san_too_many"
METADATA_MISSING = "metadata_missing"
NOT_AUTHORIZED = "not_authorized"
NOT_FOUND = "not_found"
PASSWORD_REQUIRED = "password_required"
