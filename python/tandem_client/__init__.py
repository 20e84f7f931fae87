"""Python client of tandem, a gRPC search server (learned-sparse first stage, MaxSim rerank).

>>> import numpy as np
>>> from tandem_client import Client
>>> with Client("127.0.0.1:50051") as client:  # doctest: +SKIP
...     hits = client.search(np.zeros((4, 128), np.float32), sparse={"apple": 1.5}, k=5)

:class:`Client` is blocking, :class:`AsyncClient` the same on asyncio; every failed call raises
:class:`TandemError`. The API is ``proto/tandem/v1/search.proto`` of the tandem repository.
"""

from tandem_client._version import __version__
from tandem_client.aio import AsyncClient
from tandem_client.client import Client
from tandem_client.errors import TandemError
from tandem_client.types import (
    DeleteResult,
    Explanation,
    Hit,
    IndexInfo,
    Query,
    TermContribution,
    TokenMatch,
)

__all__ = [
    "AsyncClient",
    "Client",
    "DeleteResult",
    "Explanation",
    "Hit",
    "IndexInfo",
    "Query",
    "TandemError",
    "TermContribution",
    "TokenMatch",
    "__version__",
]
