"""Tests of tandem_client against an in-process fake server (no tandem server needed).

Run from the repository root after ``pip install ./python pytest``::

    python -m pytest python/tests -q

The fake implements ``tandem.v1.Search``, ``tandem.v1.Admin`` and ``grpc.health.v1.Health`` with
the package's own generated stubs, records every request and its metadata, and answers canned
responses, so these tests check what goes on the wire and how answers and errors come back.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tandem_client import (
    AsyncClient,
    Client,
    DeleteResult,
    Explanation,
    Hit,
    Query,
    TandemError,
    TermContribution,
    TokenMatch,
)
from tandem_client._proto import search_pb2, search_pb2_grpc

TOKEN = "search-secret"
ADMIN_TOKEN = "admin-secret"
DIM = 4


def canned_hits(request: search_pb2.SearchRequest) -> list[search_pb2.Hit]:
    """Two hits; the first reranked and fused, the second neither; explained when asked."""
    first = search_pb2.Hit(
        doc_id="doc-1", score=0.1, sparse_score=2.5, maxsim_score=1.25, fused_score=0.1
    )
    second = search_pb2.Hit(doc_id="doc-2", score=0.75, sparse_score=0.75)
    if request.explain:
        first.explanation.token_matches.add(
            query_token=0, doc_token=3, score=1.25, query_text="", doc_text="apple"
        )
        first.explanation.terms.add(
            term="apple", term_id=17, query_weight=1.5, doc_weight=2.0, contribution=3.0
        )
        second.explanation.SetInParent()
    return [first, second]


class FakeSearch(search_pb2_grpc.SearchServicer):
    """Records requests; refuses k = 0 and a wrong dim like the real server."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.metadata: list[dict[str, str]] = []

    def _check(self, request: search_pb2.SearchRequest, context: Any, where: str) -> None:
        if request.HasField("k") and request.k == 0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}k: must be >= 1")
        vectors = request.query.vectors
        if request.query.HasField("vectors") and vectors.dim != DIM:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{where}query.vectors.dim: {vectors.dim} != index dim {DIM}",
            )

    def _record(self, request: Any, context: Any) -> None:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata()))
        if self.metadata[-1].get("authorization") != f"Bearer {TOKEN}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown token")

    def Search(self, request: Any, context: Any) -> Any:
        self._record(request, context)
        self._check(request, context, "")
        return search_pb2.SearchResponse(hits=canned_hits(request), query_id=request.query_id)

    def SearchBatch(self, request: Any, context: Any) -> Any:
        self._record(request, context)
        for i, one in enumerate(request.requests):
            self._check(one, context, f"requests[{i}].")
        return search_pb2.SearchBatchResponse(
            responses=[search_pb2.SearchResponse(hits=canned_hits(r)) for r in request.requests]
        )

    def GetIndexInfo(self, request: Any, context: Any) -> Any:
        self._record(request, context)
        return search_pb2.IndexInfo(
            doc_count=10, live_count=9, deleted_count=1, vocab_size=30522, dim=DIM,
            vector_codec="f16", default_k=10, default_kappa=30, default_first_stage="exact",
            maxsim_kernel="avx2", doc_tokens=True, path="/idx", token_count=123,
            attributes={"lang": "string"}, server_version="0.1.0",
        )  # fmt: skip


class FakeAdmin(search_pb2_grpc.AdminServicer):
    """Deletes need the admin token."""

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def Delete(self, request: Any, context: Any) -> Any:
        if dict(context.invocation_metadata()).get("authorization") != f"Bearer {ADMIN_TOKEN}":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "Delete needs an admin token")
        self.requests.append(request)
        known = [i for i in request.ids if i.startswith("doc-")]
        unknown = [i for i in request.ids if not i.startswith("doc-")]
        return search_pb2.DeleteResponse(
            deleted=len(known), already_deleted=0, unknown_ids=unknown,
            live_count=9 - len(known), deleted_count=1 + len(known),
        )  # fmt: skip


class Server:
    """A running fake server and its servicers."""

    def __init__(self) -> None:
        self.search = FakeSearch()
        self.admin = FakeAdmin()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        search_pb2_grpc.add_SearchServicer_to_server(self.search, self.server)
        search_pb2_grpc.add_AdminServicer_to_server(self.admin, self.server)
        self.health = health.HealthServicer()
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self.health.set("tandem.v1.Admin", health_pb2.HealthCheckResponse.NOT_SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.target = f"127.0.0.1:{port}"
        self.server.start()

    def last(self) -> Any:
        """The last search request received."""
        return self.search.requests[-1]


@pytest.fixture()
def server() -> Iterator[Server]:
    fake = Server()
    try:
        yield fake
    finally:
        fake.server.stop(None)


@pytest.fixture()
def client(server: Server) -> Iterator[Client]:
    with Client(server.target, token=TOKEN, admin_token=ADMIN_TOKEN, timeout=10) as c:
        yield c


def test_float32_vectors_go_as_raw_bytes(server: Server, client: Client) -> None:
    vectors = np.arange(8, dtype=np.float32).reshape(2, DIM) / 3
    client.search(vectors, k=5)
    request = server.last()
    assert request.query.vectors.dim == DIM
    assert request.query.vectors.f32_le == vectors.astype("<f4").tobytes()
    assert not request.query.vectors.f16_le and not request.query.vectors.values
    assert request.k == 5
    for absent in ("kappa", "fusion_weight", "cp_alpha", "ee_beta", "rrf_k", "query_cut"):
        assert not request.HasField(absent), absent
    assert not request.HasField("include_ids") and not request.HasField("exclude_ids")
    assert request.rerank == search_pb2.RERANK_UNSPECIFIED
    assert request.fusion_method == search_pb2.FUSION_METHOD_UNSPECIFIED
    assert request.first_stage == search_pb2.FIRST_STAGE_UNSPECIFIED
    assert request.explain is False
    assert server.search.metadata[-1]["authorization"] == f"Bearer {TOKEN}"


def test_float16_and_other_dtypes(server: Server, client: Client) -> None:
    half = np.linspace(-1, 1, 3 * DIM, dtype=np.float16).reshape(3, DIM)
    client.search(half)
    assert server.last().query.vectors.f16_le == half.astype("<f2").tobytes()
    assert not server.last().query.vectors.f32_le
    double = np.linspace(-1, 1, 2 * DIM).reshape(2, DIM)
    client.search(double)
    assert server.last().query.vectors.f32_le == double.astype("<f4").tobytes()
    # Non-contiguous and big-endian arrays are made contiguous little-endian.
    wide = np.arange(2 * 2 * DIM, dtype=">f4").reshape(2, 2 * DIM)[:, ::2]
    client.search(wide)
    sent = np.frombuffer(server.last().query.vectors.f32_le, dtype="<f4").reshape(2, DIM)
    assert np.array_equal(sent, wide)


def test_bad_vectors_are_refused_locally(server: Server, client: Client) -> None:
    with pytest.raises(ValueError, match="vectors"):
        client.search(np.zeros(DIM, np.float32))
    with pytest.raises(ValueError, match="vectors"):
        client.search(np.zeros((1, 2, DIM), np.float32))
    with pytest.raises(TypeError, match="vectors"):
        client.search(np.array([["a"] * DIM]))
    with pytest.raises(ValueError, match=r"queries\[1\]\.vectors"):
        client.search_batch([Query(vectors=np.zeros((1, DIM))), Query(vectors=np.zeros(3))])
    assert server.search.requests == []


def test_sparse_text_and_knobs(server: Server, client: Client) -> None:
    client.search(
        sparse={"apple": 1.5, "pie": 0.25}, text="apple pie", k=3, kappa=30, filter='lang = "en"',
        include_ids=["a", "b"], exclude_ids=[], fusion="rrf", fusion_weight=0.5,
        first_stage="approximate", explain=True, rerank=False, query_id="q7", cp_alpha=0.9,
        ee_beta=4, rrf_k=60.0, query_cut=5, rescore=100, expand=2, depth=0,
    )  # fmt: skip
    r = server.last()
    assert dict(r.query.sparse_tokens) == {"apple": 1.5, "pie": 0.25}
    assert not r.query.HasField("sparse") and not r.query.HasField("vectors")
    assert r.query.text == "apple pie"
    assert (r.k, r.kappa, r.filter, r.query_id) == (3, 30, 'lang = "en"', "q7")
    assert list(r.include_ids.ids) == ["a", "b"]
    assert r.HasField("exclude_ids") and list(r.exclude_ids.ids) == []
    assert r.fusion_method == search_pb2.FUSION_METHOD_RRF and r.fusion_weight == 0.5
    assert r.first_stage == search_pb2.FIRST_STAGE_APPROXIMATE
    assert r.rerank == search_pb2.RERANK_NONE and r.explain is True
    assert r.cp_alpha == pytest.approx(0.9) and r.ee_beta == 4 and r.rrf_k == 60.0
    assert (r.query_cut, r.rescore, r.expand, r.depth) == (5, 100, 2, 0)
    assert r.HasField("depth")

    client.search(sparse={17: 1.5, 3: 0.5}, fusion="none", first_stage="exact")
    r = server.last()
    assert list(r.query.sparse.indices) == [17, 3] and list(r.query.sparse.values) == [1.5, 0.5]
    assert not r.query.sparse_tokens
    assert r.HasField("fusion_weight") and r.fusion_weight == 0.0
    assert r.fusion_method == search_pb2.FUSION_METHOD_UNSPECIFIED
    assert r.first_stage == search_pb2.FIRST_STAGE_EXACT

    for kwargs, word in [
        ({"fusion": "borda"}, "fusion"),
        ({"fusion": "none", "fusion_weight": 0.5}, "fusion_weight"),
        ({"first_stage": "fast"}, "first_stage"),
        ({"kappa": -1}, "kappa"),
        ({"sparse": {"a": 1.0, 2: 1.0}}, "sparse"),
        ({"include_ids": "doc-1"}, "include_ids"),
    ]:
        with pytest.raises((TypeError, ValueError), match=word):
            client.search(**kwargs)


def test_hits_and_explanations(client: Client) -> None:
    hits = client.search(np.ones((1, DIM), np.float32))
    assert hits == [
        Hit(id="doc-1", score=np.float32(0.1).item(), maxsim=1.25, sparse=2.5,
            fused=np.float32(0.1).item()),
        Hit(id="doc-2", score=0.75, maxsim=None, sparse=0.75, fused=None),
    ]  # fmt: skip
    explained = client.search(np.ones((1, DIM), np.float32), explain=True)
    assert explained[0].explanation == Explanation(
        token_matches=[TokenMatch(0, 3, 1.25, "", "apple")],
        terms=[TermContribution("apple", 17, 1.5, 2.0, 3.0)],
    )
    assert explained[1].explanation == Explanation(token_matches=[], terms=[])


def test_batch_is_one_call_with_overrides(server: Server, client: Client) -> None:
    queries = [
        Query(vectors=np.ones((1, DIM), np.float32), sparse={"a": 1.0}),
        Query(sparse={5: 2.0}, k=3, kappa=40, filter="year > 2000", explain=True, query_id="b"),
    ]
    results = client.search_batch(queries, k=7, fusion="zscore")
    assert len(server.search.requests) == 1
    batch = server.last()
    assert [r.k for r in batch.requests] == [7, 3]
    assert [r.HasField("kappa") for r in batch.requests] == [False, True]
    assert [r.filter for r in batch.requests] == ["", "year > 2000"]
    assert [r.query_id for r in batch.requests] == ["", "b"]
    assert all(r.fusion_method == search_pb2.FUSION_METHOD_ZSCORE for r in batch.requests)
    assert [hits[0].explanation is None for hits in results] == [True, False]
    with pytest.raises(TandemError) as caught:
        client.search_batch([Query(sparse={"a": 1.0}), Query(sparse={"a": 1.0}, k=0)])
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.message == "requests[1].k: must be >= 1"


def test_errors(server: Server, client: Client) -> None:
    with pytest.raises(TandemError) as caught:
        client.search(np.ones((2, DIM + 1), np.float32))
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == f"query.vectors.dim: {DIM + 1} != index dim {DIM}"
    assert str(error) == f"INVALID_ARGUMENT: query.vectors.dim: {DIM + 1} != index dim {DIM}"
    with Client(server.target) as anonymous, pytest.raises(TandemError) as caught:
        anonymous.info()
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(server.target, token=TOKEN) as plain, pytest.raises(TandemError) as caught:
        plain.delete(["doc-1"])
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
    with Client("127.0.0.1:1", timeout=5) as nowhere, pytest.raises(TandemError) as caught:
        nowhere.health()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_info_delete_health(server: Server, client: Client) -> None:
    info = client.info()
    assert (info.doc_count, info.live_count, info.deleted_count, info.dim) == (10, 9, 1, DIM)
    assert (info.vector_codec, info.default_first_stage, info.doc_tokens) == ("f16", "exact", True)
    assert info.attributes == {"lang": "string"} and info.raw.token_count == 123
    result = client.delete(["doc-3", "nope"])
    assert result == DeleteResult(
        deleted=1, already_deleted=0, unknown_ids=["nope"], live_count=8, deleted_count=2
    )
    assert client.health() == "SERVING"
    assert client.health("tandem.v1.Admin") == "NOT_SERVING"
    with pytest.raises(TandemError) as caught:
        client.health("no.such.Service")
    assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_async_client(server: Server) -> None:
    async def run() -> tuple[list[list[Hit]], list[list[Hit]], str, DeleteResult, TandemError]:
        async with AsyncClient(server.target, token=TOKEN, admin_token=ADMIN_TOKEN) as client:
            vectors = np.ones((1, DIM), np.float16)
            many = await asyncio.gather(*(client.search(vectors, k=i + 1) for i in range(3)))
            batch = await client.search_batch([Query(sparse={"a": 1.0})] * 2, explain=True)
            status = await client.health()
            deleted = await client.delete(["doc-9"])
            try:
                await client.search(np.ones((1, 3), np.float32))
            except TandemError as error:
                return list(many), batch, status, deleted, error
            raise AssertionError("no error")

    many, batch, status, deleted, error = asyncio.run(run())
    assert len(many) == 3 and all(hits[0].id == "doc-1" for hits in many)
    assert sorted(r.k for r in server.search.requests if hasattr(r, "k"))[:3] == [1, 2, 3]
    assert all(hits[0].explanation is not None for hits in batch)
    assert status == "SERVING" and deleted.deleted == 1
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT


def test_query_client_script(server: Server, tmp_path: Path) -> None:
    vectors = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 0.25]]
    spec = {
        "target": server.target,
        "token": TOKEN,
        "admin_token": ADMIN_TOKEN,
        "queries": [
            {"vectors": vectors, "dtype": "float32", "sparse": {"apple": 1.5}, "text": None,
             "k": 10, "kappa": None, "filter": None, "explain": False},
            {"vectors": vectors, "dtype": "float16", "sparse": {"17": 2.0}, "sparse_ids": True,
             "text": None, "k": 2, "kappa": 30, "filter": 'lang = "en"', "explain": True},
        ],
        "invalid": {"vectors": [[0.5, 0.5]], "dtype": "float32", "sparse": None, "k": 10},
        "delete": ["doc-1", "missing"],
    }  # fmt: skip
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    script = Path(__file__).with_name("query_client.py")
    done = subprocess.run(
        [sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["search"] == out["batch"] == out["async"]
    first = out["search"][0][0]
    assert first["id"] == "doc-1" and first["score"] == np.float32(0.1).item()
    assert first["explanation"] is None
    assert out["search"][1][0]["explanation"]["token_matches"][0]["doc_token"] == 3
    assert out["search"][1][1]["explanation"] == {"token_matches": [], "terms": []}
    assert out["info"]["dim"] == DIM and out["health"] == "SERVING"
    assert out["error"]["code"] == "INVALID_ARGUMENT"
    assert out["delete"]["unknown_ids"] == ["missing"]
    sent = [r for r in server.search.requests if isinstance(r, search_pb2.SearchRequest)]
    assert sent[0].query.vectors.f32_le == np.array(vectors, np.float32).tobytes()
    assert sent[1].query.vectors.f16_le == np.array(vectors, np.float16).tobytes()
    assert list(sent[1].query.sparse.indices) == [17]
