"""The pure parts of ovs_driver: the JSON parser it gives python-ovs when python-ovs has
no C one, the vswitchd verdict rule, the reading of python-ovs's column values and of
its transaction errors. The OVSDB behaviour itself is tested against a real
ovsdb-server in tests/functional/test_ovs_driver.py."""
from __future__ import annotations

import errno
import json
from typing import Any

import ovs.json
import ovs.jsonrpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ovs_driver import jsonparse
from ovs_driver.idl import is_lost_race, parse_txn_error
from ovs_driver.rows import as_int, as_map, optional, optional_str, port_settled

MESSAGES: list[Any] = [
    {"id": 1, "result": [{"uuid": ["uuid", "5f0e"]}], "error": None},
    {"method": "update3", "params": [["m", "Open_vSwitch"], "0",
                                     {"Interface": {"u": {"insert": {"name": "tap{x}"}}}}],
     "id": None},
    {"method": "echo", "params": [], "id": "echo"},
    {"s": 'quote " brace } bracket ] backslash \\ done', "u": "h\u00e9llo \u2603 \U0001f600"},
    [1, [2, [3, {"a": [], "b": -1.5e3, "c": True, "d": None}]]],
]


class ChunkStream:
    """What ovs.jsonrpc.Connection reads from: ``recv`` hands out the given chunks."""

    name = "unit:chunks"

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    def recv(self, n: int) -> tuple[int, bytes | None]:
        if not self.chunks:
            return errno.EAGAIN, None
        return 0, self.chunks.pop(0)

    def close(self) -> None:
        pass


# With its C parser python-ovs never uses ours (install() leaves it alone).
python_ovs_parses_in_c = pytest.mark.skipif(
    ovs.json.PARSER == ovs.json.PARSER_C, reason="python-ovs has its C parser")


def through_jsonrpc(chunks: list[bytes]) -> list[Any]:
    """Messages as python-ovs's own JSON-RPC connection decodes them, with our parser."""
    assert jsonparse.install() or ovs.json.Parser is jsonparse.StreamParser
    rpc = ovs.jsonrpc.Connection(ChunkStream(chunks))
    out = []
    while True:
        err, msg = rpc.recv()
        if err:
            assert err == errno.EAGAIN, (err, rpc.status)
            return out
        out.append(msg.to_json())


def raw(messages: list[Any], sep: str = "") -> str:
    return sep.join(json.dumps(m, ensure_ascii=False) for m in messages)


def feed_all(text: str) -> list[Any]:
    """Parse a stream the way ovs.jsonrpc.Connection drives a parser."""
    out: list[Any] = []
    parser: Any = None
    while text:
        if parser is None:
            parser = jsonparse.StreamParser()
        text = text[parser.feed(text):]
        if parser.is_done():
            out.append(parser.finish())
            parser = None
    return out


# -- the parser ----------------------------------------------------------------------

def test_concatenated_messages_and_whitespace() -> None:
    assert feed_all(raw(MESSAGES)) == MESSAGES
    assert feed_all(raw(MESSAGES, sep="\n  \r\n\t")) == MESSAGES


def test_every_split_point() -> None:
    text = raw(MESSAGES)
    for cut in range(1, len(text)):
        p = jsonparse.StreamParser()
        assert p.feed(text[:cut]) == cut or p.is_done(), cut
        if not p.is_done():
            used = p.feed(text[cut:])
            assert p.is_done(), cut
            assert p.finish() == MESSAGES[0]
            assert feed_all(text[cut + used:]) == MESSAGES[1:]


@python_ovs_parses_in_c
def test_python_ovs_connection_one_byte_at_a_time_including_utf8() -> None:
    msgs = [{"id": 7, "result": {"x": "h\u00e9llo \u2603"}, "error": None},
            {"id": None, "method": "update3", "params": ["m", "0", {"T": {}}]}]
    data = raw(msgs).encode()
    # python-ovs decodes each recv() on its own: hand it whole characters per chunk.
    chunks = [ch.encode() for ch in data.decode()]
    assert through_jsonrpc(chunks) == msgs
    assert through_jsonrpc([data]) == msgs


@given(st.lists(st.recursive(
    st.none() | st.booleans() | st.integers(-2**62, 2**62)
    | st.text(st.characters(min_codepoint=0x20, blacklist_categories=["Cs"]), max_size=8),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.text(st.characters(min_codepoint=0x20, blacklist_categories=["Cs"]), max_size=5),
        kids, max_size=4),
    max_leaves=12,
).map(lambda v: {"v": v}), min_size=1, max_size=5), st.lists(st.integers(1, 64), max_size=20))
def test_same_values_as_python_ovs_under_any_chunking(messages: list[Any],
                                                      cuts: list[int]) -> None:
    text = raw(messages)
    chunks, pos = [], 0
    for size in cuts:
        chunks.append(text[pos:pos + size])
        pos += size
    chunks.append(text[pos:])
    ours: list[Any] = []
    parser: Any = None
    for chunk in chunks:
        while chunk:
            parser = parser or jsonparse.StreamParser()
            chunk = chunk[parser.feed(chunk):]
            if parser.is_done():
                ours.append(parser.finish())
                parser = None
    assert ours == messages
    # python-ovs's own (pure Python) parser agrees, value for value.
    theirs = []
    for m in messages:
        p = jsonparse.original_parser()
        p.feed(json.dumps(m, ensure_ascii=False))
        theirs.append(p.finish())
    assert theirs == ours


@pytest.mark.parametrize("bad", ['{"a": tx}', "42 ", '{"a": 1]', '{"a": 1 "b": 2}', "}"])
def test_malformed_message_is_an_error_text(bad: str) -> None:
    p = jsonparse.StreamParser()
    p.feed(bad)
    assert p.is_done()
    assert isinstance(p.finish(), str)  # python-ovs's convention: a str is the error


@python_ovs_parses_in_c
def test_malformed_stream_drops_the_python_ovs_connection() -> None:
    rpc = ovs.jsonrpc.Connection(ChunkStream([b'{"id": 1, "result": tx}']))
    jsonparse.install()
    err, msg = rpc.recv()
    assert msg is None and err == errno.EPROTO


def test_incomplete_is_not_an_error() -> None:
    p = jsonparse.StreamParser()
    for part in ['{"a": tr', 'ue, "b": "x\\', '"y", "c": [1', ", 2]"]:
        assert p.feed(part) == len(part) and not p.is_done()
    assert p.finish() == "unexpected end of input"
    assert p.feed("} {") == 1
    assert p.finish() == {"a": True, "b": 'x"y', "c": [1, 2]}


def test_whole_documents_keep_python_ovs_parser() -> None:
    jsonparse.install()
    assert ovs.json.from_string(' {"a": [1]} ') == {"a": [1]}
    assert isinstance(ovs.json.from_string('{"a": 1} x'), str)  # trailing garbage
    assert not jsonparse.install()  # once is enough


# -- rows ------------------------------------------------------------------------------

def test_column_values() -> None:
    assert optional([]) is None and optional([5]) == 5 and optional("x") == "x"
    assert as_int([]) == -1 and as_int([3]) == 3 and as_int(7) == 7 and as_int([True]) == -1
    assert as_map({"a": 1}) == {"a": "1"} and as_map([]) == {}
    assert optional_str([]) is None and optional_str(["e"]) == "e"


@pytest.mark.parametrize(("ofport", "error", "cur", "target", "settled"), [
    (5, None, 0, 10, True),            # has its port: done, whatever cur_cfg says
    (-1, None, 9, 10, False),          # vswitchd has not acted on our change yet
    (-1, "stale error", 9, 10, False),  # an error from an earlier try does not count
    (-1, "no such device", 10, 10, True),  # acted on it and failed: the answer
    (-1, None, 11, 10, True),          # acted on it, no port, no error: also an answer
    (-1, None, 3, None, False),        # nothing committed: wait for the ofport...
    (-1, "no such device", 3, None, True),  # ...or an error already there
])
def test_port_settled(ofport: int, error: str | None, cur: int, target: int | None,
                      settled: bool) -> None:
    assert port_settled(ofport, error, cur, target) is settled


# -- transaction errors ------------------------------------------------------------------

def test_txn_errors() -> None:
    dup = json.dumps({"error": "constraint violation", "details": (
        'Transaction causes multiple rows in "Port" table to have identical values '
        '("tap1") for index on column "name".')})
    error, details = parse_txn_error(dup)
    assert error == "constraint violation" and is_lost_race(error, details)
    root = ('transaction causes "Open_vSwitch" table to contain 2 rows, greater than the '
            'schema-defined limit of 1 row(s)')
    assert is_lost_race("constraint violation", root)
    ref = parse_txn_error(json.dumps({"error": "referential integrity violation",
                                      "details": "cannot delete"}))
    assert ref == ("referential integrity violation", "cannot delete")
    assert not is_lost_race(*ref)
    assert not is_lost_race("constraint violation", "2 values when type requires 1")
    assert parse_txn_error("no error details available") == (
        "no error details available", None)
