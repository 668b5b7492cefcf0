"""A gRPC fuzz test over every RPC of both services: any message, however odd, gets OK or a
refusal from the documented set, never INTERNAL (a bug) and never a traceback in the log.

Messages are built by hypothesis from each request's descriptor: strings from a small
alphabet of plausible pieces (names, CIDRs, addresses, markup, very long ones), numbers at
their edges. One controller on SQLite serves every example, with a pool and a subnet the
strings often name, so requests get past "not found" into the paths that do work.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecnet_api.v1 import ecnet_pb2 as pb
from ecnet_api.v1 import ecnet_pb2_grpc as pb_grpc
from ipcontroller.refusal import gave_reason
from tests.lab.controller import running_controller, sqlite_url

S = grpc.StatusCode
DOCUMENTED = {S.OK, S.INVALID_ARGUMENT, S.NOT_FOUND, S.ALREADY_EXISTS, S.FAILED_PRECONDITION,
              S.RESOURCE_EXHAUSTED, S.UNAVAILABLE}
# SyncNow / SyncStatus without ONOS configured: refused as a precondition.

PIECES = ["", "p", "fz", "ns", "eth0", "n1", "10.98.0.0/24", "10.98.0.5", "10.98.0.0",
          "10.98.0.255", "fd98::/64", "fd98::5", "::", "0.0.0.0/0", "dynamic", "fixed",
          "sticky", "standalone", "onos", "active", "idle", "ns/o", "[/]", "[bold]x",
          "\x00", "é", "-", "/", "a" * 300, "x" * 70_000]
TEXT = st.one_of(st.sampled_from(PIECES), st.text(max_size=20),
                 st.lists(st.sampled_from(PIECES[:20]), max_size=3).map("".join))
NUMBERS = {
    FieldDescriptor.TYPE_UINT32: st.sampled_from([0, 1, 576, 1500, 9000, 9001, 2**31 - 1,
                                                  2**31, 2**32 - 1]),
    FieldDescriptor.TYPE_INT32: st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]),
    FieldDescriptor.TYPE_UINT64: st.sampled_from([0, 1, 2**63, 2**64 - 1]),
    FieldDescriptor.TYPE_INT64: st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, -(2**63)]),
}


def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return _message(field.message_type, depth + 1)
    if field.type == FieldDescriptor.TYPE_STRING:
        return TEXT
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return st.sampled_from([v.number for v in field.enum_type.values])
    if field.type in NUMBERS:
        return NUMBERS[field.type]
    if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(allow_nan=False, allow_infinity=False, width=32)
    return st.just(None)


def _message(desc: Any, depth: int = 0) -> st.SearchStrategy[dict[str, Any]]:
    if depth > 3:
        return st.just({})
    fields = {}
    for f in desc.fields:
        v = _value(f, depth)
        is_repeated = f.is_repeated
        fields[f.name] = st.lists(v, max_size=3) if is_repeated else v
    return st.fixed_dictionaries({}, optional=fields)


def _build(cls: type[Message], values: dict[str, Any]) -> Message:
    msg = cls()
    _fill(msg, values)
    return msg


def _fill(msg: Message, values: dict[str, Any]) -> None:
    for name, v in values.items():
        f = msg.DESCRIPTOR.fields_by_name[name]
        if v is None:
            continue
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            if f.is_repeated:
                for item in v:
                    _fill(getattr(msg, name).add(), item)
            else:
                _fill(getattr(msg, name), v)
        elif f.is_repeated:
            getattr(msg, name).extend(v)
        else:
            setattr(msg, name, v)


def _methods() -> list[tuple[str, str, type[Message]]]:
    out = []
    for svc in pb.DESCRIPTOR.services_by_name.values():
        for m in svc.methods:
            out.append((svc.name, m.name, getattr(pb, m.input_type.name)))
    return out


STREAMING = {m.name for svc in pb.DESCRIPTOR.services_by_name.values() for m in svc.methods
             if m.server_streaming}


def _first_of_stream(call: Any) -> Any:
    """A server-streaming method (the watch never ends by itself): its first message, or its
    refusal, then cancel. (A call refused before its first message raises from next().)"""
    def one(req: Message, timeout: float) -> Any:
        stream = call(req, timeout=timeout)
        try:
            return next(stream)
        finally:
            stream.cancel()
    return one


METHODS = _methods()


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    with running_controller(sqlite_url(tmp_path_factory.mktemp("fuzz"))) as ctl:
        ch = grpc.insecure_channel(f"127.0.0.1:{ctl.port}",
                                   options=[("grpc.max_send_message_length", 16 << 20)])
        admin = pb_grpc.IPAdminStub(ch)
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="p", policy="dynamic")))
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="p", cidr="10.98.0.0/24"))
        admin.CreatePool(pb.CreatePoolRequest(pool=pb.Pool(name="fz", policy="fixed")))
        admin.CreateSubnet(pb.CreateSubnetRequest(pool="fz", cidr="fd98::/64"))
        yield ch
        ch.close()


@pytest.mark.parametrize("service,method,request_cls", METHODS,
                         ids=[f"{s}.{m}" for s, m, _ in METHODS])
def test_every_rpc_answers_with_a_documented_code(
        channel: grpc.Channel, caplog: pytest.LogCaptureFixture, service: str, method: str,
        request_cls: type[Message]) -> None:
    path = f"/ecnet.v1.{service}/{method}"
    if method in STREAMING:
        call = _first_of_stream(channel.unary_stream(
            path, request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b))
    else:
        call = channel.unary_unary(path, request_serializer=lambda m: m.SerializeToString(),
                                   response_deserializer=lambda b: b)
    seen: set[grpc.StatusCode] = set()

    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(_message(request_cls.DESCRIPTOR))
    def one(values: dict[str, Any]) -> None:
        req = _build(request_cls, values)
        try:
            call(req, timeout=30)
            code = S.OK
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            assert code in DOCUMENTED, (code, err.details(), req)  # type: ignore[attr-defined]
            # ...and said by the controller (an ErrorDetail), not by the transport: a reply
            # over the metadata limit reads as RESOURCE_EXHAUSTED with no reason.
            assert gave_reason(err), (code, err.details())  # type: ignore[attr-defined]
        seen.add(code)

    with caplog.at_level(logging.WARNING):
        one()
    tracebacks = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    assert seen
