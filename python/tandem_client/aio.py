"""The asynchronous client, on a ``grpc.aio`` channel."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Callable

import grpc  # type: ignore[import-untyped, unused-ignore]
from grpc import aio  # type: ignore[import-untyped, unused-ignore]

from tandem_client import _convert, _stubs
from tandem_client._channel import ChannelOptions, Metadata, Settings, Tls
from tandem_client._proto import search_pb2
from tandem_client.errors import from_rpc_error
from tandem_client.types import DeleteResult, Hit, IndexInfo, Query, Sparse, Vectors


def _channel(target: str, settings: Settings) -> Any:
    """A ``grpc.aio.Channel`` to ``target`` with the client's credentials and options."""
    if settings.credentials is None:
        return aio.insecure_channel(target, options=settings.options)
    return aio.secure_channel(target, settings.credentials, options=settings.options)


class AsyncClient:
    """An asyncio client of a tandem server: :class:`~tandem_client.Client`'s constructor and
    methods, the methods as coroutines. Create it inside a running event loop.

    ``target`` is ``host:port`` (any gRPC target string). ``token`` is sent as
    ``authorization: Bearer <token>`` with every call; ``admin_token`` (default: ``token``) with
    the Admin calls (:meth:`delete`, :meth:`reload_index`), which go to ``admin_target`` when the
    server serves them on a listener of their own (``--admin-listen``). ``tls=True`` uses TLS with
    the system's root certificates; pass ``grpc.ssl_channel_credentials(...)`` for others.
    ``timeout`` is the default deadline of every call in seconds (None: no deadline); each method
    takes its own ``timeout`` too. ``options`` are gRPC channel arguments.

    Every failed call raises :class:`tandem_client.TandemError`. Use it as an async context
    manager, or await :meth:`close`.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls: Tls = False,
        timeout: float | None = None,
        options: ChannelOptions = (),
        admin_token: str | None = None,
        admin_target: str | None = None,
    ) -> None:
        """Opens an asyncio channel to ``target`` (connecting lazily, on the first call)."""
        self._settings = Settings(target, token, admin_token, admin_target, tls, timeout, options)
        self._channel = _channel(target, self._settings)
        self._admin_channel = (
            _channel(admin_target, self._settings) if admin_target is not None else None
        )
        self._search = _stubs.SearchStub(self._channel)
        self._admin = _stubs.AdminStub(self._admin_channel or self._channel)
        self._health = _stubs.HealthStub(self._channel)

    @property
    def target(self) -> str:
        """The server's address, as given."""
        return self._settings.target

    async def _call(
        self,
        method: Callable[..., Any],
        request: Any,
        timeout: float | None,
        metadata: Metadata,
    ) -> Any:
        """Runs one unary call, turning a gRPC failure into a TandemError."""
        try:
            return await method(
                request, timeout=self._settings.call_timeout(timeout), metadata=metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    async def search(
        self,
        vectors: Vectors | None = None,
        sparse: Sparse | None = None,
        text: str | None = None,
        *,
        k: int = 10,
        kappa: int | None = None,
        filter: str | None = None,
        include_ids: Sequence[str] | None = None,
        exclude_ids: Sequence[str] | None = None,
        fusion: str | None = None,
        fusion_weight: float | None = None,
        first_stage: str | None = None,
        explain: bool = False,
        rerank: bool = True,
        query_id: str = "",
        timeout: float | None = None,
        cp_alpha: float | None = None,
        ee_beta: int | None = None,
        rrf_k: float | None = None,
        query_cut: int | None = None,
        rescore: int | None = None,
        expand: int | None = None,
        depth: int | None = None,
    ) -> list[Hit]:
        """Searches with one query and returns its hits, best first.

        ``vectors`` is a 2-D numpy array ``[n_tokens, dim]`` (float32 or float16, sent as raw
        bytes; other real dtypes are converted to float32); ``sparse`` maps terms (str) or
        vocabulary ids (int) to weights; ``text`` is encoded by the server (when it has query
        encoders). Knobs left None use the server's defaults: ``kappa`` (first-stage candidates),
        ``filter`` (an attribute expression), ``include_ids``/``exclude_ids``, ``fusion``
        (``"zscore"``, ``"minmax"``, ``"rrf"``, or ``"none"`` for MaxSim alone, i.e. fusion
        weight 0), ``fusion_weight``, ``first_stage`` (``"exact"``, ``"approximate"``),
        ``cp_alpha``, ``ee_beta``, ``rrf_k``, and the approximate first stage's ``query_cut``,
        ``rescore``, ``expand`` and ``depth``. ``rerank=False`` returns the first stage's top k
        by sparse score (no vectors needed). ``explain=True`` fills :attr:`Hit.explanation`.

        Raises ``ValueError``/``TypeError`` for arguments that cannot be sent, and
        :class:`~tandem_client.TandemError` when the call fails.
        """
        knobs = _convert.Knobs(
            k=k, kappa=kappa, filter=filter, include_ids=include_ids, exclude_ids=exclude_ids,
            fusion=fusion, fusion_weight=fusion_weight, first_stage=first_stage,
            explain=explain, rerank=rerank, query_id=query_id, cp_alpha=cp_alpha,
            ee_beta=ee_beta, rrf_k=rrf_k, query_cut=query_cut, rescore=rescore, expand=expand,
            depth=depth,
        )  # fmt: skip
        request = _convert.search_request(vectors, sparse, text, knobs)
        response = await self._call(
            self._search.Search, request, timeout, self._settings.metadata
        )
        return _convert.hits(response, request.explain)

    async def search_batch(
        self,
        queries: Sequence[Query],
        *,
        k: int = 10,
        kappa: int | None = None,
        filter: str | None = None,
        include_ids: Sequence[str] | None = None,
        exclude_ids: Sequence[str] | None = None,
        fusion: str | None = None,
        fusion_weight: float | None = None,
        first_stage: str | None = None,
        explain: bool = False,
        rerank: bool = True,
        timeout: float | None = None,
        cp_alpha: float | None = None,
        ee_beta: int | None = None,
        rrf_k: float | None = None,
        query_cut: int | None = None,
        rescore: int | None = None,
        expand: int | None = None,
        depth: int | None = None,
    ) -> list[list[Hit]]:
        """Searches with many queries in one ``SearchBatch`` call; hits per query, in order.

        The knobs are those of :meth:`search`, for every query; a :class:`~tandem_client.Query`'s
        own ``k``, ``kappa``, ``filter``, ``include_ids``, ``exclude_ids`` and ``explain``
        replace them for that query. If any query is invalid the whole call fails
        (INVALID_ARGUMENT naming its position, e.g. ``requests[3]...``).
        """
        knobs = _convert.Knobs(
            k=k, kappa=kappa, filter=filter, include_ids=include_ids, exclude_ids=exclude_ids,
            fusion=fusion, fusion_weight=fusion_weight, first_stage=first_stage,
            explain=explain, rerank=rerank, cp_alpha=cp_alpha, ee_beta=ee_beta, rrf_k=rrf_k,
            query_cut=query_cut, rescore=rescore, expand=expand, depth=depth,
        )  # fmt: skip
        request = _convert.batch_request(queries, knobs)
        response = await self._call(
            self._search.SearchBatch, request, timeout, self._settings.metadata
        )
        return _convert.batch_hits(response, request)

    async def info(self, *, timeout: float | None = None) -> IndexInfo:
        """Describes the loaded index (``GetIndexInfo``)."""
        response = await self._call(
            self._search.GetIndexInfo,
            search_pb2.GetIndexInfoRequest(),
            timeout,
            self._settings.metadata,
        )
        return _convert.index_info(response)

    async def delete(self, ids: Sequence[str], *, timeout: float | None = None) -> DeleteResult:
        """Deletes documents by external id (``Admin/Delete``; needs an admin token when the
        server has tokens). Unknown ids are reported in the result, not an error."""
        response = await self._call(
            self._admin.Delete,
            _convert.delete_request(ids),
            timeout,
            self._settings.admin_metadata,
        )
        return _convert.delete_result(response)

    async def reload_index(self, path: str = "", *, timeout: float | None = None) -> IndexInfo:
        """Loads the index directory ``path`` ("" : the one served) and swaps it in
        (``Admin/ReloadIndex``); returns the index now served."""
        if not isinstance(path, str):
            raise TypeError(f"path: expected a str, got {type(path).__name__}")
        response = await self._call(
            self._admin.ReloadIndex,
            search_pb2.ReloadIndexRequest(path=path),
            timeout,
            self._settings.admin_metadata,
        )
        return _convert.index_info(response.info)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The ``grpc.health.v1`` status of ``service`` ("" : the server): "SERVING",
        "NOT_SERVING", ..."""
        response = await self._call(
            self._health.Check,
            _convert.health_request(service),
            timeout,
            self._settings.metadata,
        )
        return _convert.health_status(response)

    async def close(self, grace: float | None = None) -> None:
        """Closes the channel(s); calls in flight get ``grace`` seconds, then are cancelled."""
        await self._channel.close(grace)
        if self._admin_channel is not None:
            await self._admin_channel.close(grace)

    async def __aenter__(self) -> AsyncClient:
        """Returns the client itself."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Closes the client."""
        await self.close()

    def __repr__(self) -> str:
        """``AsyncClient('host:port')``."""
        return f"AsyncClient({self._settings.target!r})"
