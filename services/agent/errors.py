from __future__ import annotations


class JobError(Exception):
    """A job that cannot succeed as asked: reported as ``agent.job.failed`` with the code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
