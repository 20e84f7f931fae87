"""Queries a tandem server from Python, as an external client would, and prints what it got.

Run by `tests/tests/python_client.rs`, which generates the stubs with grpcio-tools:

    python -m grpc_tools.protoc -I proto --python_out=STUBS --grpc_python_out=STUBS \
        tandem/v1/search.proto
    python tests/python/query_tandem.py --stubs STUBS --target 127.0.0.1:PORT \
        --requests requests.json

`requests.json` holds `{"requests": [...], "invalid": {...}}`, each request with the field names
of `tandem.v1.SearchRequest` (enums by name, floats exact). The script sends every request with
`Search`, all of them in one `SearchBatch`, and all of them followed by the invalid one over one
`SearchStream`; it also sends the invalid one with `Search`, calls `GetIndexInfo`, checks health
with the standard `grpc.health.v1` stub, and lists the services through server reflection (v1).
It prints one JSON object on stdout; the Rust test compares it with the Rust client's answers.
"""

import argparse
import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

# grpcio-reflection ships messages for `grpc.reflection.v1alpha` only. The server speaks
# `grpc.reflection.v1`, whose messages are the same (same fields, same numbers, so the same bytes
# on the wire): those messages are sent to the v1 method through a generic stub.
from grpc_reflection.v1alpha import reflection_pb2
from google.protobuf import descriptor_pb2

REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
OPTIONAL_FIELDS = (
    "k",
    "kappa",
    "cp_alpha",
    "ee_beta",
    "query_cut",
    "rescore",
    "fusion_weight",
    "rrf_k",
)
TIMEOUT_SECONDS = 60


def build_request(pb, spec):
    """A `SearchRequest` from its JSON form."""
    spec_query = spec["query"]
    query = pb.Query(sparse_tokens=spec_query.get("sparse_tokens", {}))
    if "sparse" in spec_query:
        query.sparse.indices.extend(spec_query["sparse"]["indices"])
        query.sparse.values.extend(spec_query["sparse"]["values"])
    if "vectors" in spec_query:
        query.vectors.dim = spec_query["vectors"]["dim"]
        query.vectors.values.extend(spec_query["vectors"]["values"])
    request = pb.SearchRequest(
        query=query,
        query_id=spec["query_id"],
        rerank=pb.Rerank.Value(spec["rerank"]),
        first_stage=pb.FirstStage.Value(spec["first_stage"]),
        fusion_method=pb.FusionMethod.Value(spec["fusion_method"]),
    )
    for field in OPTIONAL_FIELDS:
        if field in spec:
            setattr(request, field, spec[field])
    return request


def optional(message, field):
    """The value of an `optional` field, or None when it is absent."""
    return getattr(message, field) if message.HasField(field) else None


def response_json(response):
    """A `SearchResponse` as JSON: hits, unknown tokens and the work counters (not timings)."""
    return {
        "query_id": response.query_id,
        "unknown_tokens": response.unknown_tokens,
        "hits": [
            [
                hit.doc_id,
                hit.score,
                hit.sparse_score,
                optional(hit, "maxsim_score"),
                optional(hit, "fused_score"),
            ]
            for hit in response.hits
        ],
        "stats": [
            response.stats.candidates,
            response.stats.pruned,
            response.stats.reranked,
        ],
    }


def stream_message_json(message):
    """A `SearchStreamResponse` as JSON: the response, or the error in its place."""
    if message.WhichOneof("result") == "response":
        return {"response": response_json(message.response)}
    error = message.error
    return {
        "error": {"code": error.code, "message": error.message, "query_id": error.query_id}
    }


def health(channel):
    """The health of the whole server, of `tandem.v1.Search`, and of a service it lacks."""
    stub = health_pb2_grpc.HealthStub(channel)
    statuses = {}
    for service in ("", "tandem.v1.Search", "no.such.Service"):
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_SECONDS
            )
            statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as error:
            statuses[service] = error.code().name
    return statuses


def reflection(channel):
    """The services listed through reflection, and the methods of `tandem.v1.Search` in the
    file descriptor that reflection serves for it."""
    call = channel.stream_stream(
        REFLECTION_V1,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="tandem.v1.Search"),
    ]
    listed, described = call(iter(requests), timeout=TIMEOUT_SECONDS)
    services = sorted(s.name for s in listed.list_services_response.service)
    methods = []
    for encoded in described.file_descriptor_response.file_descriptor_proto:
        descriptor = descriptor_pb2.FileDescriptorProto.FromString(encoded)
        for service in descriptor.service:
            if f"{descriptor.package}.{service.name}" == "tandem.v1.Search":
                methods = [method.name for method in service.method]
    return {"services": services, "search_methods": methods}


def main():
    """Parses the arguments, runs every call, prints the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stubs", required=True, help="folder of the generated stubs")
    parser.add_argument("--target", required=True, help="server address, host:port")
    parser.add_argument("--requests", required=True, help="JSON file of requests")
    args = parser.parse_args()

    sys.path.insert(0, args.stubs)
    from tandem.v1 import search_pb2, search_pb2_grpc

    with open(args.requests, encoding="utf-8") as f:
        specs = json.load(f)
    requests = [build_request(search_pb2, spec) for spec in specs["requests"]]
    invalid = build_request(search_pb2, specs["invalid"])

    with grpc.insecure_channel(args.target) as channel:
        stub = search_pb2_grpc.SearchStub(channel)
        info = stub.GetIndexInfo(search_pb2.GetIndexInfoRequest(), timeout=TIMEOUT_SECONDS)
        search = [
            response_json(stub.Search(request, timeout=TIMEOUT_SECONDS))
            for request in requests
        ]
        try:
            stub.Search(invalid, timeout=TIMEOUT_SECONDS)
            invalid_search = None
        except grpc.RpcError as error:
            invalid_search = {"code": error.code().value[0], "message": error.details()}
        batch = stub.SearchBatch(
            search_pb2.SearchBatchRequest(requests=requests), timeout=TIMEOUT_SECONDS
        )
        stream = stub.SearchStream(iter(requests + [invalid]), timeout=TIMEOUT_SECONDS)
        output = {
            "grpc_version": grpc.__version__,
            "info": {
                "doc_count": info.doc_count,
                "vocab_size": info.vocab_size,
                "dim": info.dim,
                "default_first_stage": info.default_first_stage,
            },
            "search": search,
            "invalid_search": invalid_search,
            "batch": [response_json(r) for r in batch.responses],
            "stream": [stream_message_json(m) for m in stream],
            "health": health(channel),
            "reflection": reflection(channel),
        }
    json.dump(output, sys.stdout)


if __name__ == "__main__":
    main()
