"""The generated gRPC stub classes, as the clients use them.

``search_pb2_grpc`` (generated, untyped) and ``grpc_health`` (untyped without stubs) are reached
through names typed ``Any`` here, so the rest of the package type-checks strictly.
"""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health_pb2_grpc  # type: ignore[import-untyped, unused-ignore]

from tandem_client._proto import search_pb2_grpc

SearchStub: Any = search_pb2_grpc.SearchStub
"""``tandem.v1.Search``'s stub class (works on sync and asyncio channels)."""
AdminStub: Any = search_pb2_grpc.AdminStub
"""``tandem.v1.Admin``'s stub class."""
HealthStub: Any = health_pb2_grpc.HealthStub
"""``grpc.health.v1.Health``'s stub class."""
