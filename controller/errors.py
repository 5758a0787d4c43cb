"""The one error type the REST API turns into `{"error": {"code", "message"}}`.

Every layer below the API (validation, store, service) raises `ApiError` with the HTTP status
it deserves, so the API never has to guess what went wrong from a bare exception.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error the client sees: HTTP status, a stable machine code, a message naming the fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    """The request itself is malformed: JSON syntax, types, unknown or missing fields."""
    return ApiError(400, code, message)


def not_found(message: str, code: str = "not_found") -> ApiError:
    return ApiError(404, code, message)


def conflict(message: str, code: str = "conflict") -> ApiError:
    """Well-formed, but clashes with the current state (duplicate, still in use...)."""
    return ApiError(409, code, message)


def invalid(message: str, code: str = "invalid_value") -> ApiError:
    """Well-formed, but a value is not acceptable (bad IP, out of range, outside the subnet)."""
    return ApiError(422, code, message)


def unavailable(message: str, code: str = "unavailable") -> ApiError:
    """The controller cannot finish now: agent silent, switch not connected, timeout."""
    return ApiError(503, code, message)
