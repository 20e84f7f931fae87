"""Queries a tandem server through the installed ``tandem_client`` and prints what it got.

Run by the Rust integration test in a fresh virtual environment after ``pip install ./python``:

    python query_client.py SPEC.json

SPEC.json::

    {"target": "127.0.0.1:PORT", "token": null | "...", "admin_token": null | "...",
     "queries": [QUERY, ...], "invalid": QUERY, "delete": ["id1", ...] | null}

    QUERY = {"vectors": [[f32, ...], ...] | null, "dtype": "float32" | "float16",
             "sparse": {"term": w} | {"17": w} | null, "sparse_ids": false | true,
             "text": null | "...", "k": 10, "kappa": null | 30, "filter": null | "...",
             "explain": false | true}

(``sparse_ids: true``: the sparse keys are vocabulary ids written as strings; every key but
``vectors`` may be left out.) The vectors become a numpy array of ``dtype``, so the client sends
them as ``f32_le`` / ``f16_le`` bytes.

It prints one JSON object on stdout::

    {"search": [[HIT, ...] per query, Client.search],
     "batch": [[HIT, ...] per query, one Client.search_batch],
     "async": [[HIT, ...] per query, AsyncClient.search under asyncio.gather],
     "info": {"doc_count", "dim", "vector_codec", "live_count", "deleted_count", "vocab_size"},
     "health": "SERVING",
     "error": {"code": "INVALID_ARGUMENT", "message": "..."} | null,
     "delete": {"deleted", "already_deleted", "unknown_ids", "live_count", "deleted_count"}
               | null}

    HIT = {"id", "score", "maxsim", "sparse", "fused",
           "explanation": null | {"token_matches": [{"query_token", "doc_token", "score",
                                                     "query_text", "doc_text"}],
                                  "terms": [{"term", "term_id", "query_weight", "doc_weight",
                                             "contribution"}]}}

``error`` is the TandemError of searching ``invalid`` (null when that search succeeded; when the
client refused it before sending, ``code`` is null and ``exception`` names the Python exception).
Floats are the float32 values the server sent, exactly (Python's repr round-trips them).
``delete`` runs last, with ``admin_token`` (default ``token``). Exits non-zero, with a message
on stderr, when anything but the invalid search fails.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

import numpy as np

from tandem_client import AsyncClient, Client, Hit, Query, TandemError

TIMEOUT_SECONDS = 60.0
DTYPES = {"float32": np.float32, "float16": np.float16}


def query_of(spec: dict[str, Any]) -> Query:
    """The :class:`Query` (content, k, kappa, filter, explain) of one query of the spec."""
    vectors = None
    if spec.get("vectors") is not None:
        dtype = DTYPES[spec.get("dtype") or "float32"]
        vectors = np.array(spec["vectors"], dtype=dtype)
        if vectors.ndim == 1 and vectors.size == 0:
            vectors = vectors.reshape(0, 0)
    sparse: dict[Any, float] | None = None
    if spec.get("sparse") is not None:
        if spec.get("sparse_ids"):
            sparse = {int(key): float(value) for key, value in spec["sparse"].items()}
        else:
            sparse = {str(key): float(value) for key, value in spec["sparse"].items()}
    return Query(
        vectors=vectors,
        sparse=sparse,
        text=spec.get("text"),
        k=spec.get("k", 10),
        kappa=spec.get("kappa"),
        filter=spec.get("filter"),
        explain=bool(spec.get("explain", False)),
    )


def search_kwargs(query: Query) -> dict[str, Any]:
    """The keyword arguments of ``Client.search`` for ``query``."""
    return {
        "vectors": query.vectors,
        "sparse": query.sparse,
        "text": query.text,
        "k": query.k if query.k is not None else 10,
        "kappa": query.kappa,
        "filter": query.filter,
        "explain": bool(query.explain),
    }


def hit_json(hit: Hit) -> dict[str, Any]:
    """A hit as JSON (the dataclass fields, the explanation nested)."""
    return asdict(hit)


def hits_json(hits: list[Hit]) -> list[dict[str, Any]]:
    """A hit list as JSON."""
    return [hit_json(hit) for hit in hits]


async def async_searches(target: str, token: str | None, queries: list[Query]) -> list[list[Hit]]:
    """Every query through one AsyncClient, concurrently."""
    async with AsyncClient(target, token=token, timeout=TIMEOUT_SECONDS) as client:
        return list(await asyncio.gather(*(client.search(**search_kwargs(q)) for q in queries)))


def main(argv: list[str]) -> int:
    """Runs the spec named by ``argv[1]`` and prints the result."""
    if len(argv) != 2:
        print("usage: python query_client.py SPEC.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as file:
        spec = json.load(file)
    target = spec["target"]
    token = spec.get("token")
    admin_token = spec.get("admin_token")
    specs = spec.get("queries") or []
    queries = [query_of(one) for one in specs]
    out: dict[str, Any] = {}

    with Client(
        target, token=token, admin_token=admin_token, timeout=TIMEOUT_SECONDS
    ) as client:
        out["search"] = [hits_json(client.search(**search_kwargs(query))) for query in queries]
        # One SearchBatch call (each Query carries its own k, kappa, filter and explain).
        out["batch"] = [hits_json(hits) for hits in client.search_batch(queries)]
        out["async"] = [
            hits_json(hits) for hits in asyncio.run(async_searches(target, token, queries))
        ]
        info = client.info()
        out["info"] = {
            "doc_count": info.doc_count,
            "dim": info.dim,
            "vector_codec": info.vector_codec,
            "live_count": info.live_count,
            "deleted_count": info.deleted_count,
            "vocab_size": info.vocab_size,
        }
        out["health"] = client.health()

        out["error"] = None
        if spec.get("invalid") is not None:
            invalid = spec["invalid"]
            try:
                client.search(**search_kwargs(query_of(invalid)))
            except TandemError as error:
                out["error"] = {"code": error.code.name, "message": error.message}
            except (TypeError, ValueError) as error:
                out["error"] = {
                    "code": None,
                    "message": str(error),
                    "exception": type(error).__name__,
                }

        out["delete"] = None
        if spec.get("delete") is not None:
            out["delete"] = asdict(client.delete(spec["delete"]))

    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except TandemError as error:
        print(f"query_client.py: {error}", file=sys.stderr)
        sys.exit(1)
