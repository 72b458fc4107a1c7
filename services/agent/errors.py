from __future__ import annotations

import jks

# An exception's text in a report is cut to this many characters.
MESSAGE_LIMIT = 1000


class JobError(Exception):
    """A job that cannot succeed as asked: reported as ``agent.job.failed`` with the code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RetryLater(Exception):
    """A failure that may pass (the issuer is away): the job is left unanswered, so the bus
    delivers it again with backoff, then dead-letters it."""


def unexpected(exc: Exception) -> JobError:
    """What to report for an exception no job step expected: running the job again would meet
    it again, so it is answered, with the exception named."""
    text = f"{type(exc).__name__}: {exc}"[:MESSAGE_LIMIT]
    if isinstance(exc, jks.util.KeystoreException):
        return JobError("store_unreadable", f"the Java KeyStore cannot be read: {text}")
    return JobError("internal_error", f"the agent failed unexpectedly: {text}")
