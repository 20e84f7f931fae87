"""Request building and response reading, shared by the sync and the async client.

Everything here is pure (no I/O): it turns the client's Python arguments into ``tandem.v1``
messages and the server's messages into the dataclasses of :mod:`tandem_client.types`.
Arguments the wire cannot carry (wrong types, a non-2-D vector array, an unknown fusion name,
a negative count) are refused here with ``TypeError``/``ValueError`` naming the argument; values
the wire can carry but the server may refuse (``k=0``, a wrong ``dim``, a bad filter) go to the
server, which answers INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import numpy as np
from grpc_health.v1 import health_pb2  # type: ignore[import-untyped, unused-ignore]

from tandem_client._proto import search_pb2
from tandem_client.errors import TandemError
from tandem_client.types import (
    DeleteResult,
    Explanation,
    Hit,
    IndexInfo,
    Query,
    Sparse,
    TermContribution,
    TokenMatch,
    Vectors,
)

UINT32_MAX = 2**32 - 1

FUSION_METHODS: dict[str, search_pb2.FusionMethod] = {
    "zscore": search_pb2.FUSION_METHOD_ZSCORE,
    "minmax": search_pb2.FUSION_METHOD_MINMAX,
    "rrf": search_pb2.FUSION_METHOD_RRF,
}
"""Fusion names -> ``FusionMethod``; ``"none"`` is handled apart (fusion weight 0)."""

FIRST_STAGES: dict[str, search_pb2.FirstStage] = {
    "exact": search_pb2.FIRST_STAGE_EXACT,
    "approximate": search_pb2.FIRST_STAGE_APPROXIMATE,
}
"""First-stage names -> ``FirstStage``."""


def _uint32(name: str, value: object) -> int:
    """``value`` as a uint32, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    number = int(value)
    if not 0 <= number <= UINT32_MAX:
        raise ValueError(f"{name}: {number} is out of range [0, {UINT32_MAX}]")
    return number


def _float(name: str, value: object) -> float:
    """``value`` as a float, or a TypeError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a float, got {type(value).__name__}")
    return float(value)


def _ids(name: str, ids: Sequence[str]) -> list[str]:
    """A list of document ids, or a TypeError naming ``name`` (a bare string is refused)."""
    if isinstance(ids, (str, bytes)):
        raise TypeError(f"{name}: expected a sequence of ids, got a single {type(ids).__name__}")
    out = list(ids)
    for i, one in enumerate(out):
        if not isinstance(one, str):
            raise TypeError(f"{name}[{i}]: expected a str, got {type(one).__name__}")
    return out


def set_vectors(
    message: search_pb2.TokenVectors, vectors: Vectors, name: str = "vectors"
) -> None:
    """Fills ``message`` with ``vectors`` as raw little-endian bytes.

    float32 goes to ``f32_le`` and float16 to ``f16_le``, each with one copy (the request bytes;
    none more for a C-contiguous little-endian array); other real dtypes are converted to float32
    first. Never a Python list of floats. The bytes are set in place, in the request that is
    sent, so no message holding them is copied.
    """
    if isinstance(vectors, np.ndarray):
        array: np.ndarray[Any, Any] = vectors
    else:
        try:
            array = np.asarray(vectors)
        except ValueError as error:
            raise ValueError(f"{name}: not a 2-D array [n_tokens, dim]: {error}") from None
    if array.ndim != 2:
        raise ValueError(
            f"{name}: expected a 2-D array [n_tokens, dim], got {array.ndim}-D of shape "
            f"{tuple(array.shape)}"
        )
    dim = _uint32(f"{name}.shape[1]", array.shape[1])
    if array.dtype == np.float16:
        message.dim = dim
        message.f16_le = np.ascontiguousarray(array, dtype="<f2").tobytes()
        return
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a float array, got dtype {array.dtype}")
    message.dim = dim
    message.f32_le = np.ascontiguousarray(array, dtype="<f4").tobytes()


def set_sparse(query: search_pb2.Query, sparse: Sparse, name: str = "sparse") -> None:
    """Sets ``query.sparse_tokens`` (string keys) or ``query.sparse`` (int keys) from ``sparse``."""
    if not isinstance(sparse, Mapping):
        raise TypeError(f"{name}: expected a mapping of term or id -> weight")
    items = list(sparse.items())
    if not items:
        return
    terms = [(key, weight) for key, weight in items if isinstance(key, str)]
    if len(terms) == len(items):
        for term, weight in terms:
            query.sparse_tokens[term] = _float(f"{name}[{term!r}]", weight)
        return
    if terms:
        raise TypeError(f"{name}: keys must be all str (terms) or all int (ids), not mixed")
    indices: list[int] = []
    values: list[float] = []
    for key, weight in items:
        indices.append(_uint32(f"{name} key", key))
        values.append(_float(f"{name}[{key!r}]", weight))
    query.sparse.indices.extend(indices)
    query.sparse.values.extend(values)


def set_query(
    query: search_pb2.Query,
    vectors: Vectors | None,
    sparse: Sparse | None,
    text: str | None,
    name: str = "",
) -> None:
    """Fills ``query`` with one query's content (``name`` prefixes argument names)."""
    if vectors is not None:
        set_vectors(query.vectors, vectors, f"{name}vectors")
    if sparse is not None:
        set_sparse(query, sparse, f"{name}sparse")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"{name}text: expected a str, got {type(text).__name__}")
        query.text = text


@dataclass(frozen=True)
class Knobs:
    """A search's knobs, as given to ``search``/``search_batch`` (None: the server default)."""

    k: int | None = 10
    kappa: int | None = None
    filter: str | None = None
    include_ids: Sequence[str] | None = None
    exclude_ids: Sequence[str] | None = None
    fusion: str | None = None
    fusion_weight: float | None = None
    first_stage: str | None = None
    explain: bool = False
    rerank: bool = True
    query_id: str = ""
    cp_alpha: float | None = None
    ee_beta: int | None = None
    rrf_k: float | None = None
    query_cut: int | None = None
    rescore: int | None = None
    expand: int | None = None
    depth: int | None = None

    def for_query(self, query: Query) -> Knobs:
        """These knobs with ``query``'s overrides applied."""
        changes: dict[str, Any] = {}
        for field in ("k", "kappa", "filter", "include_ids", "exclude_ids", "explain"):
            value = getattr(query, field)
            if value is not None:
                changes[field] = value
        if query.query_id:
            changes["query_id"] = query.query_id
        return replace(self, **changes) if changes else self


def set_knobs(request: search_pb2.SearchRequest, knobs: Knobs, name: str = "") -> None:
    """Sets ``request``'s knobs; the optional fields only when given (``name`` prefixes
    argument names in errors)."""
    if not isinstance(knobs.query_id, str):
        raise TypeError(f"{name}query_id: expected a str, got {type(knobs.query_id).__name__}")
    request.query_id = knobs.query_id
    for field in ("k", "kappa", "ee_beta", "query_cut", "rescore", "expand", "depth"):
        value = getattr(knobs, field)
        if value is not None:
            setattr(request, field, _uint32(name + field, value))
    for field in ("cp_alpha", "rrf_k"):
        value = getattr(knobs, field)
        if value is not None:
            setattr(request, field, _float(name + field, value))
    if knobs.filter is not None:
        if not isinstance(knobs.filter, str):
            raise TypeError(f"{name}filter: expected a str, got {type(knobs.filter).__name__}")
        request.filter = knobs.filter
    if knobs.include_ids is not None:
        request.include_ids.SetInParent()
        request.include_ids.ids.extend(_ids(f"{name}include_ids", knobs.include_ids))
    if knobs.exclude_ids is not None:
        request.exclude_ids.SetInParent()
        request.exclude_ids.ids.extend(_ids(f"{name}exclude_ids", knobs.exclude_ids))

    fusion_weight = knobs.fusion_weight
    if knobs.fusion is not None:
        fusion = str(knobs.fusion).lower()
        if fusion == "none":
            if fusion_weight is not None and _float(f"{name}fusion_weight", fusion_weight) != 0.0:
                raise ValueError(f'{name}fusion_weight: must be 0 or None with fusion="none"')
            fusion_weight = 0.0
        elif fusion in FUSION_METHODS:
            request.fusion_method = FUSION_METHODS[fusion]
        else:
            raise ValueError(
                f"{name}fusion: {knobs.fusion!r} is not one of 'zscore', 'minmax', 'rrf', 'none'"
            )
    if fusion_weight is not None:
        request.fusion_weight = _float(f"{name}fusion_weight", fusion_weight)

    if knobs.first_stage is not None:
        stage = str(knobs.first_stage).lower()
        if stage not in FIRST_STAGES:
            raise ValueError(
                f"{name}first_stage: {knobs.first_stage!r} is not one of 'exact', 'approximate'"
            )
        request.first_stage = FIRST_STAGES[stage]

    if not knobs.rerank:
        request.rerank = search_pb2.RERANK_NONE
    request.explain = bool(knobs.explain)


def search_request(
    vectors: Vectors | None, sparse: Sparse | None, text: str | None, knobs: Knobs
) -> search_pb2.SearchRequest:
    """The ``SearchRequest`` of one query with ``knobs``."""
    request = search_pb2.SearchRequest()
    set_query(request.query, vectors, sparse, text)
    set_knobs(request, knobs)
    return request


def batch_request(queries: Sequence[Query], knobs: Knobs) -> search_pb2.SearchBatchRequest:
    """One ``SearchBatchRequest`` of ``queries``, each with ``knobs`` and its own overrides."""
    batch = search_pb2.SearchBatchRequest()
    for i, query in enumerate(queries):
        if not isinstance(query, Query):
            raise TypeError(
                f"queries[{i}]: expected a tandem_client.Query, got {type(query).__name__}"
            )
        request = batch.requests.add()
        set_query(request.query, query.vectors, query.sparse, query.text, f"queries[{i}].")
        set_knobs(request, knobs.for_query(query), f"queries[{i}].")
    return batch


def explanation(message: search_pb2.Explanation) -> Explanation:
    """The :class:`Explanation` of a ``tandem.v1.Explanation``."""
    return Explanation(
        token_matches=[
            TokenMatch(
                query_token=m.query_token,
                doc_token=m.doc_token,
                score=m.score,
                query_text=m.query_text,
                doc_text=m.doc_text,
            )
            for m in message.token_matches
        ],
        terms=[
            TermContribution(
                term=t.term,
                term_id=t.term_id,
                query_weight=t.query_weight,
                doc_weight=t.doc_weight,
                contribution=t.contribution,
            )
            for t in message.terms
        ],
    )


def hit(message: search_pb2.Hit, explain: bool) -> Hit:
    """The :class:`Hit` of a ``tandem.v1.Hit``; its explanation only when ``explain``."""
    return Hit(
        id=message.doc_id,
        score=message.score,
        maxsim=message.maxsim_score if message.HasField("maxsim_score") else None,
        sparse=message.sparse_score,
        fused=message.fused_score if message.HasField("fused_score") else None,
        explanation=explanation(message.explanation) if explain else None,
    )


def hits(response: search_pb2.SearchResponse, explain: bool) -> list[Hit]:
    """The hits of a ``SearchResponse``, best first."""
    return [hit(h, explain) for h in response.hits]


def batch_hits(
    response: search_pb2.SearchBatchResponse, request: search_pb2.SearchBatchRequest
) -> list[list[Hit]]:
    """The hits of each response of a ``SearchBatchResponse``, in request order."""
    if len(response.responses) != len(request.requests):
        raise TandemError(
            grpc.StatusCode.INTERNAL,
            f"SearchBatch answered {len(response.responses)} responses to "
            f"{len(request.requests)} requests",
        )
    return [
        hits(one, req.explain) for one, req in zip(response.responses, request.requests)
    ]


def index_info(message: search_pb2.IndexInfo) -> IndexInfo:
    """The :class:`IndexInfo` of a ``tandem.v1.IndexInfo``."""
    return IndexInfo(
        doc_count=message.doc_count,
        live_count=message.live_count,
        deleted_count=message.deleted_count,
        vocab_size=message.vocab_size,
        dim=message.dim,
        vector_codec=message.vector_codec,
        default_k=message.default_k,
        default_kappa=message.default_kappa,
        default_first_stage=message.default_first_stage,
        maxsim_kernel=message.maxsim_kernel,
        doc_tokens=message.doc_tokens,
        checksums=message.checksums,
        path=message.path,
        token_count=message.token_count,
        attributes=dict(message.attributes),
        server_version=message.server_version,
        raw=message,
    )


def delete_request(ids: Sequence[str]) -> search_pb2.DeleteRequest:
    """The ``DeleteRequest`` of ``ids``."""
    return search_pb2.DeleteRequest(ids=_ids("ids", ids))


def delete_result(message: search_pb2.DeleteResponse) -> DeleteResult:
    """The :class:`DeleteResult` of a ``DeleteResponse``."""
    return DeleteResult(
        deleted=message.deleted,
        already_deleted=message.already_deleted,
        unknown_ids=list(message.unknown_ids),
        live_count=message.live_count,
        deleted_count=message.deleted_count,
    )


def health_request(service: str) -> health_pb2.HealthCheckRequest:
    """The ``grpc.health.v1`` check request of ``service`` ("" is the server as a whole)."""
    if not isinstance(service, str):
        raise TypeError(f"service: expected a str, got {type(service).__name__}")
    return health_pb2.HealthCheckRequest(service=service)


def health_status(response: health_pb2.HealthCheckResponse) -> str:
    """The status name of a health check response: "SERVING", "NOT_SERVING", ..."""
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
