"""The one failure type of the terminology package."""

from __future__ import annotations


class TerminologyError(Exception):
    """Why a terminology question cannot be answered.

    `code` is an OperationOutcome issue type: "not-found" (an unknown definition or code),
    "not-supported" (a feature this server does not implement, or a system it does not hold),
    "invalid" (a broken definition or input), "too-costly" (an expansion too large).
    """

    def __init__(self, code: str, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.parameter = parameter
