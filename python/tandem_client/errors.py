"""The one exception type the client raises for a failed call."""

from __future__ import annotations

from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]


class TandemError(Exception):
    """A call the server (or the channel) failed, with its gRPC status.

    ``code`` is the :class:`grpc.StatusCode` (e.g. ``INVALID_ARGUMENT``, ``UNAUTHENTICATED``,
    ``UNAVAILABLE`` when the server cannot be reached, ``DEADLINE_EXCEEDED`` after the timeout)
    and ``message`` the status message (for INVALID_ARGUMENT it names the offending field).
    ``str(error)`` shows both.
    """

    code: grpc.StatusCode
    """The gRPC status code."""
    message: str
    """The status message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        """Creates the error for ``code`` and ``message``."""
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        """``"CODE_NAME: message"``."""
        name = getattr(self.code, "name", str(self.code))
        return f"{name}: {self.message}"

    def __repr__(self) -> str:
        """``TandemError(StatusCode.X, 'message')``."""
        return f"TandemError({self.code!s}, {self.message!r})"


def from_rpc_error(error: Any) -> TandemError:
    """The :class:`TandemError` of a ``grpc.RpcError`` or ``grpc.aio.AioRpcError``."""
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else None
    details = details_of() if callable(details_of) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    return TandemError(code, details if isinstance(details, str) else str(error))
