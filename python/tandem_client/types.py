"""The values the client takes and returns: queries, hits, explanations, index facts.

Field names follow ``proto/tandem/v1/search.proto`` where the proto has them (``Hit`` shortens
``doc_id``/``*_score`` to ``id``/``score``/``maxsim``/``sparse``/``fused``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import numpy.typing as npt

from tandem_client._proto import search_pb2

Vectors = Union[npt.NDArray[Any], Sequence[Sequence[float]]]
"""A query's token vectors: a 2-D array ``[n_tokens, dim]``, best float32 or float16 (sent as
raw little-endian bytes, ``f32_le`` / ``f16_le``); other real dtypes are converted to float32."""

Sparse = Union[Mapping[str, float], Mapping[int, float]]
"""A query's sparse vector: token string -> weight (resolved by the server with the index
vocabulary; ``Query.sparse_tokens``) or vocabulary id -> weight (``Query.sparse``)."""


@dataclass(frozen=True)
class TokenMatch:
    """A query token and the document token it matched best (MaxSim)."""

    query_token: int
    """Position of the token in the query's token vectors (0-based)."""
    doc_token: int
    """Position of the matched token in the document's token vectors (0-based)."""
    score: float
    """Their dot product (with the document token as stored)."""
    query_text: str
    """The query token's wordpiece when the server encoded the query's text, else empty."""
    doc_text: str
    """The document token's string when the index stores them (``--doc-tokens``), else empty."""


@dataclass(frozen=True)
class TermContribution:
    """A sparse term shared by the query and the document."""

    term: str
    """The vocabulary term."""
    term_id: int
    """Its vocabulary id."""
    query_weight: float
    """Its weight in the query."""
    doc_weight: float
    """Its weight in the document."""
    contribution: float
    """``query_weight * doc_weight``."""


@dataclass(frozen=True)
class Explanation:
    """Why a document scored what it did (asked with ``explain=True``)."""

    token_matches: list[TokenMatch]
    """One per query token, in query order (empty when the request did not rerank); their scores
    sum to the hit's ``maxsim`` (to float32 rounding)."""
    terms: list[TermContribution]
    """One per query term the document has, heaviest contribution first; their contributions sum
    to the hit's ``sparse`` (to float32 rounding)."""


@dataclass(frozen=True)
class Hit:
    """One result of a search, best first in the returned list."""

    id: str
    """The document's external id."""
    score: float
    """The final ranking score: fused when fused, else MaxSim when reranked, else sparse."""
    maxsim: float | None
    """The MaxSim score; None when the request did not rerank."""
    sparse: float
    """The first-stage sparse score."""
    fused: float | None
    """The fused score; None when the request did not fuse."""
    explanation: Explanation | None = None
    """The explanation; None unless the search asked for it (``explain=True``)."""


@dataclass(frozen=True)
class Query:
    """One query of :meth:`Client.search_batch`: its content and optional per-query overrides.

    Give ``vectors`` and/or ``sparse`` (or ``text`` for a server with query encoders). The
    overrides, when not None, replace the knob of the same name given to ``search_batch``.
    """

    vectors: Vectors | None = None
    """Token vectors, a 2-D array ``[n_tokens, dim]`` (see :data:`Vectors`)."""
    sparse: Sparse | None = None
    """Sparse vector: token -> weight, or vocabulary id -> weight."""
    text: str | None = None
    """The query as plain text, encoded by the server."""
    query_id: str = ""
    """An identifier echoed by the server (not returned in the hits)."""
    k: int | None = None
    """Results to return for this query."""
    kappa: int | None = None
    """First-stage candidates for this query."""
    filter: str | None = None
    """Attribute filter expression for this query."""
    include_ids: Sequence[str] | None = None
    """Only these documents may be returned for this query."""
    exclude_ids: Sequence[str] | None = None
    """These documents are never returned for this query."""
    explain: bool | None = None
    """Whether to explain this query's hits."""


@dataclass(frozen=True)
class IndexInfo:
    """What the server has loaded (the useful fields of ``tandem.v1.IndexInfo``; all in ``raw``)."""

    doc_count: int
    """Documents in the index, deleted ones included."""
    live_count: int
    """Documents not deleted."""
    deleted_count: int
    """Documents deleted (tombstoned)."""
    vocab_size: int
    """Size of the sparse vocabulary."""
    dim: int
    """Values per token vector: the ``dim`` queries' vectors must have."""
    vector_codec: str
    """How token vectors are stored, e.g. ``"f16"``."""
    default_k: int
    """The server's default ``k``."""
    default_kappa: int
    """The server's default ``kappa``."""
    default_first_stage: str
    """``"exact"`` or ``"approximate"``."""
    maxsim_kernel: str
    """The MaxSim kernel the server runs (``"avx512"``, ``"avx2"``, ``"neon"``, ``"scalar"``)."""
    doc_tokens: bool
    """Whether the index stores its documents' token strings (shown in explanations)."""
    checksums: str
    """The check of the index's files: ``"verified"``, ``"pending"``, ``"skipped"`` or
    ``"corrupt: ..."`` (then searches fail with UNAVAILABLE)."""
    path: str
    """The index directory the server loaded."""
    token_count: int
    """Token vectors stored over all documents."""
    attributes: dict[str, str]
    """The document attributes filters can use: name -> ``"string"`` or ``"integer"``."""
    server_version: str
    """The server's crate version."""
    raw: search_pb2.IndexInfo = field(repr=False, compare=False)
    """The whole ``tandem.v1.IndexInfo`` message."""


@dataclass(frozen=True)
class DeleteResult:
    """The outcome of :meth:`Client.delete`."""

    deleted: int
    """Documents newly deleted by this call."""
    already_deleted: int
    """Documents given that were already deleted."""
    unknown_ids: list[str]
    """Ids the index does not have (each once, in request order)."""
    live_count: int
    """Documents not deleted, after this call."""
    deleted_count: int
    """Documents deleted, after this call."""


__all__ = [
    "DeleteResult",
    "Explanation",
    "Hit",
    "IndexInfo",
    "Query",
    "Sparse",
    "TermContribution",
    "TokenMatch",
    "Vectors",
]
