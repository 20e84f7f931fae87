"""Channel settings shared by the sync and the async client: credentials, auth, timeouts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import grpc  # type: ignore[import-untyped, unused-ignore]

ChannelOptions = Sequence[tuple[str, Any]]
"""gRPC channel arguments, e.g. ``[("grpc.max_receive_message_length", 64 << 20)]``."""

Tls = Union[bool, grpc.ChannelCredentials]
"""``False``: plaintext; ``True``: TLS with the system roots; or explicit channel credentials."""

Metadata = tuple[tuple[str, str], ...]
"""Call metadata (key, value) pairs."""


def credentials(tls: Tls) -> Any:
    """The channel credentials of ``tls``, or None for a plaintext channel."""
    if tls is True:
        return grpc.ssl_channel_credentials()
    if tls is False or tls is None:
        return None
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    raise TypeError(f"tls: expected a bool or grpc.ChannelCredentials, got {type(tls).__name__}")


def auth_metadata(token: str | None, name: str = "token") -> Metadata:
    """``authorization: Bearer <token>`` metadata, or none without a token."""
    if token is None:
        return ()
    if not isinstance(token, str):
        raise TypeError(f"{name}: expected a str, got {type(token).__name__}")
    return (("authorization", f"Bearer {token}"),)


def check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    """``timeout`` as seconds (None: no deadline), or an error naming ``name``."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name}: expected seconds as a float, got {type(timeout).__name__}")
    if not timeout > 0:
        raise ValueError(f"{name}: must be > 0 seconds, got {timeout}")
    return float(timeout)


class Settings:
    """What a client sends with every call, and where."""

    def __init__(
        self,
        target: str,
        token: str | None,
        admin_token: str | None,
        admin_target: str | None,
        tls: Tls,
        timeout: float | None,
        options: ChannelOptions,
    ) -> None:
        if not isinstance(target, str) or not target:
            raise TypeError("target: expected a non-empty str such as '127.0.0.1:50051'")
        if admin_target is not None and (not isinstance(admin_target, str) or not admin_target):
            raise TypeError("admin_target: expected a non-empty str or None")
        self.target = target
        self.admin_target = admin_target
        self.metadata = auth_metadata(token)
        self.admin_metadata = (
            auth_metadata(admin_token, "admin_token") if admin_token is not None else self.metadata
        )
        self.credentials = credentials(tls)
        self.timeout = check_timeout(timeout)
        self.options = list(options)

    def call_timeout(self, timeout: float | None) -> float | None:
        """The deadline of one call: its own ``timeout``, else the client's default."""
        return check_timeout(timeout) if timeout is not None else self.timeout
