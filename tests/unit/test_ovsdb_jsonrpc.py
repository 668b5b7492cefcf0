"""The OVSDB wire layer without OVS: stream framing, datum encoding, and the JSON-RPC
connection against a scripted in-process server on a unix socket."""
from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovs_driver.errors import OvsConnectionError, OvsTimeout, OvsTransactionError
from ovs_driver.jsonrpc import JsonRpcConnection, JsonStreamDecoder, JsonStreamError, parse_remote
from ovs_driver.ovsdb import (
    as_list,
    as_map,
    as_optional,
    decode_datum,
    named_uuid,
    ovs_map,
    ovs_set,
    ovs_uuid,
)

MESSAGES: list[Any] = [
    {"id": 1, "result": [{"uuid": ["uuid", "5f0e"]}], "error": None},
    {"method": "update", "params": ["m", {"Interface": {"u": {"new": {"name": "tap{x}"}}}}],
     "id": None},
    {"method": "echo", "params": [], "id": "echo"},
    {"s": 'quote " brace } bracket ] backslash \\ done', "u": "h\u00e9llo \u2603 \U0001f600"},
    [1, [2, [3, {"a": []}]]],
]


def _stream(messages: list[Any], sep: str = "") -> bytes:
    return sep.join(json.dumps(m, ensure_ascii=False) for m in messages).encode()


# -- framing -------------------------------------------------------------------------

def test_concatenated_messages_in_one_chunk() -> None:
    assert JsonStreamDecoder().feed(_stream(MESSAGES)) == MESSAGES


def test_whitespace_between_messages() -> None:
    d = JsonStreamDecoder()
    assert d.feed(_stream(MESSAGES, sep="\n  \r\n\t")) == MESSAGES
    assert d.feed(b"   \n") == []
    assert d.pending == 0


def test_every_split_point_byte_by_byte() -> None:
    data = _stream(MESSAGES)
    for cut in range(1, len(data)):
        d = JsonStreamDecoder()
        assert d.feed(data[:cut]) + d.feed(data[cut:]) == MESSAGES, cut


def test_one_byte_at_a_time_including_multibyte_utf8() -> None:
    d = JsonStreamDecoder()
    out: list[Any] = []
    for b in _stream(MESSAGES):
        out += d.feed(bytes([b]))
    assert out == MESSAGES


@given(st.lists(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids,
                                                               max_size=4),
    max_leaves=12,
).map(lambda v: {"v": v}), min_size=1, max_size=5), st.lists(st.integers(1, 64), max_size=20))
def test_arbitrary_chunking(messages: list[Any], chunks: list[int]) -> None:
    data = _stream(messages)
    d = JsonStreamDecoder()
    out: list[Any] = []
    pos = 0
    for size in chunks:
        out += d.feed(data[pos:pos + size])
        pos += size
    out += d.feed(data[pos:])
    assert out == messages


@pytest.mark.parametrize("bad", [b'{"a": tx}', b"42 ", b'{"a": 1}}', b'{"a": 1]', b"\xff{}"])
def test_malformed_stream_is_an_error(bad: bytes) -> None:
    with pytest.raises(JsonStreamError):
        JsonStreamDecoder().feed(bad)


def test_incomplete_is_not_an_error() -> None:
    d = JsonStreamDecoder()
    for part in [b'{"a": tr', b'ue, "b": "x\\', b'"y", "c": [1', b", 2]"]:
        assert d.feed(part) == []
    assert d.feed(b"}") == [{"a": True, "b": 'x"y', "c": [1, 2]}]


def test_oversized_message_is_refused() -> None:
    with pytest.raises(JsonStreamError):
        JsonStreamDecoder(max_message=100).feed(b'{"a": "' + b"x" * 200)


# -- datum encoding --------------------------------------------------------------------

def test_encoding_matches_rfc7047() -> None:
    assert ovs_map({"b": "2", "a": "1"}) == ["map", [["a", "1"], ["b", "2"]]]
    assert ovs_map({}) == ["map", []]
    assert ovs_set(["x"]) == ["set", ["x"]]
    assert ovs_set([ovs_uuid("u1"), named_uuid("p")]) == [
        "set", [["uuid", "u1"], ["named-uuid", "p"]]]


def test_decoding() -> None:
    assert decode_datum(["map", [["iface-id", "abc"], ["ecnet/pod", "ns/p"]]]) == {
        "iface-id": "abc", "ecnet/pod": "ns/p"}
    assert decode_datum(["set", [["uuid", "a"], ["uuid", "b"]]]) == ["a", "b"]
    assert decode_datum(["uuid", "a"]) == "a"
    assert decode_datum(["set", []]) == []
    assert decode_datum(7) == 7 and decode_datum("netdev") == "netdev"
    # Optional columns: empty set is "no value"; one-element set column may be a bare atom.
    assert as_optional(decode_datum(["set", []])) is None
    assert as_optional(decode_datum(5)) == 5
    assert as_list(decode_datum(["uuid", "a"])) == ["a"]
    assert as_map(decode_datum(["map", []])) == {}


@given(st.dictionaries(st.text(), st.text()))
def test_map_round_trip(d: dict[str, str]) -> None:
    assert decode_datum(json.loads(json.dumps(ovs_map(d)))) == d


def test_parse_remote() -> None:
    assert parse_remote("unix:/run/db.sock") == (socket.AF_UNIX, "/run/db.sock")
    assert parse_remote("tcp:127.0.0.1:6640") == (socket.AF_INET, ("127.0.0.1", 6640))
    assert parse_remote("tcp:[::1]:6640") == (socket.AF_INET6, ("::1", 6640))
    for bad in ["ssl:1.2.3.4:6640", "unix:", "tcp:host", "/run/db.sock"]:
        with pytest.raises(ValueError):
            parse_remote(bad)


# -- the connection against a scripted server -----------------------------------------

class FakeServer:
    """Accepts connections on a unix socket; replies "transact" with its params,
    answers "boom" with an error, never answers "hang", and can push messages."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(path)
        self.listener.listen()
        self.conns: list[socket.socket] = []
        self.received: list[Any] = []
        self.accepted = threading.Semaphore(0)
        self.got = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(conn)
            self.accepted.release()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        dec = JsonStreamDecoder()
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            for msg in dec.feed(data):
                with self.got:
                    self.received.append(msg)
                    self.got.notify_all()
                method = msg.get("method")
                if method == "transact":
                    self.send(conn, {"id": msg["id"], "result": msg["params"], "error": None})
                elif method == "boom":
                    self.send(conn, {"id": msg["id"], "result": None,
                                     "error": {"error": "syntax error", "details": "bad"}})

    def send(self, conn: socket.socket, msg: Any) -> None:
        # Split into two writes to exercise framing on the client side too.
        data = json.dumps(msg).encode()
        conn.sendall(data[:5])
        conn.sendall(data[5:])

    def drop_all(self) -> None:
        for c in self.conns:
            c.shutdown(socket.SHUT_RDWR)
            c.close()
        self.conns.clear()

    def close(self) -> None:
        self.listener.close()
        self.drop_all()


@pytest.fixture
def server() -> Iterator[FakeServer]:
    d = tempfile.mkdtemp(prefix="ecnet-rpc-", dir="/tmp")
    srv = FakeServer(os.path.join(d, "s.sock"))
    yield srv
    srv.close()
    os.unlink(srv.path)
    os.rmdir(d)


def test_replies_match_requests_across_threads(server: FakeServer) -> None:
    conn = JsonRpcConnection(f"unix:{server.path}")
    conn.start()
    try:
        results: dict[int, Any] = {}

        def worker(i: int) -> None:
            results[i] = conn.call("transact", ["Open_vSwitch", {"n": i}], 5.0)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == {i: ["Open_vSwitch", {"n": i}] for i in range(30)}
    finally:
        conn.close()


def test_error_reply_timeout_echo_and_notifications(server: FakeServer) -> None:
    notes: list[tuple[str, Any]] = []
    conn = JsonRpcConnection(f"unix:{server.path}",
                             on_notification=lambda m, p: notes.append((m, p)))
    conn.start()
    try:
        with pytest.raises(OvsTransactionError, match="syntax error"):
            conn.call("boom", [], 5.0)
        with pytest.raises(OvsTimeout):
            conn.call("hang", [], 0.1)
        assert server.accepted.acquire(timeout=5)
        srv_conn = server.conns[0]
        server.send(srv_conn, {"method": "update", "params": ["m", {"T": {}}], "id": None})
        server.send(srv_conn, {"method": "echo", "params": ["ping"], "id": "e1"})
        with server.got:
            assert server.got.wait_for(
                lambda: {"id": "e1", "result": ["ping"], "error": None} in server.received, 5)
        assert notes == [("update", ["m", {"T": {}}])]
    finally:
        conn.close()


def test_reconnects_and_calls_on_connected_again(server: FakeServer) -> None:
    connects = threading.Semaphore(0)
    drops = threading.Semaphore(0)
    conn = JsonRpcConnection(f"unix:{server.path}",
                             on_connected=lambda c: connects.release(),
                             on_disconnected=drops.release)
    conn.start()
    try:
        assert connects.acquire(timeout=5)
        assert server.accepted.acquire(timeout=5)
        server.drop_all()
        assert drops.acquire(timeout=5)
        assert connects.acquire(timeout=5)  # re-established, hook ran again
        assert conn.call("transact", ["x"], 5.0) == ["x"]
    finally:
        conn.close()
    with pytest.raises(OvsConnectionError):
        conn.call("transact", [], 0.1)


def test_in_flight_request_fails_when_connection_drops(server: FakeServer) -> None:
    conn = JsonRpcConnection(f"unix:{server.path}")
    conn.start()
    try:
        fut = conn.request("hang", [])
        assert server.accepted.acquire(timeout=5)
        with server.got:
            assert server.got.wait_for(lambda: len(server.received) >= 1, 5)
        server.drop_all()
        with pytest.raises(OvsConnectionError):
            fut.result(5)
    finally:
        conn.close()


def test_connect_to_missing_socket_fails_at_once() -> None:
    conn = JsonRpcConnection("unix:/tmp/ecnet-no-such-dir/db.sock")
    with pytest.raises(OvsConnectionError):
        conn.start()
