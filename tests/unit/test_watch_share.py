"""The live feed's shared events (`BatchShare`, `Stream.shared`): streams of one view get
the same bytes, built once, and exactly what their own filtering would have sent; a stream
with a row of its own in the batch, one catching up, or one that has some of the rows
already takes its own way (`Stream.admit`)."""
from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

from ecnet_api.v1 import ecnet_pb2 as pb
from ipam import changes as ch
from ipam.changes import LogRow
from ipcontroller.watch import BatchShare, Stream, WatchSettings, WireCache, encode_events


def _svc() -> Any:
    # What Stream.shared and Stream.admit read of their WatchService: nothing of the store.
    return SimpleNamespace(settings=WatchSettings(), share=BatchShare(), wire=WireCache(1000))


def _port(rev: int, key: str, node: str, *subnets: str, op: str = ch.PUT) -> LogRow:
    return LogRow(rev, ch.Change(ch.PORT, key, op, node=node, subnets=subnets,
                                 data={"mac": "0a:00:00:00:00:01", "ips": ["10.0.0.1"]}))


def _stream(svc: Any, node: str, *subnets: str, revision: int = 10) -> Stream:
    s = Stream(svc, node)
    s.relevance.seed([ch.Change(ch.PORT, f"own-{node}", ch.PUT, node=node, subnets=subnets)])
    s.revision = revision
    return s


def _own_way(stream: Stream, rows: list[LogRow]) -> tuple[list[bytes], list[str]]:
    """What the stream's own filtering sends for `rows` (on a copy: it changes state)."""
    twin = copy.copy(stream)
    twin.relevance = copy.deepcopy(stream.relevance)
    twin.refreshed = set(stream.refreshed)
    admitted = twin.admit(rows)
    assert admitted is not None
    out, gained, revision = admitted
    return encode_events(revision, out, stream.s), gained


def _ports(events: list[bytes]) -> list[str]:
    out = []
    for b in events:
        ev = pb.WatchTopologyEvent.FromString(b)
        out += [c.port.port_id or c.port_removed for c in ev.changes]
    return out


def test_streams_of_one_view_share_the_bytes_and_get_what_their_filter_sends() -> None:
    svc = _svc()
    rows = [_port(11, "a", "n9", "s1"), _port(12, "b", "n9", "s2"),
            _port(13, "c", "n8", "s1", op=ch.DEL), LogRow(14, ch.node_removed("n7"))]
    s1a, s1b, s2 = _stream(svc, "n1", "s1"), _stream(svc, "n2", "s1"), _stream(svc, "n3", "s2")
    admin = _stream(svc, "")
    want = {id(s): _own_way(s, rows)[0] for s in (s1a, s1b, s2, admin)}
    got = {id(s): s.shared(rows) for s in (s1a, s1b, s2, admin)}
    for s in (s1a, s1b, s2, admin):
        assert got[id(s)] == want[id(s)]
        assert s.revision == 14
    assert got[id(s1a)] is got[id(s1b)]               # built once for the view {s1}
    assert _ports(got[id(s1a)]) == ["a", "c", ""]      # s2's upsert filtered out
    assert _ports(got[id(s2)]) == ["b", "c", ""]
    assert _ports(got[id(admin)]) == ["a", "b", "c", ""]


def test_a_stream_with_its_own_port_in_the_batch_is_not_given_the_shared_bytes() -> None:
    svc = _svc()
    # n2's own port gains it subnet s2: it must learn s2 (and have s2 refreshed), and be
    # sent the s2 upsert of the same batch, which the view {s1} does not include.
    rows = [_port(11, "x", "n9", "s2"), _port(12, "own2", "n2", "s1", "s2"),
            _port(13, "y", "n9", "s1")]
    bystander, owner = _stream(svc, "n1", "s1"), _stream(svc, "n2", "s1")
    shared = bystander.shared(rows)
    assert shared is not None and _ports(shared) == ["own2", "y"]
    assert owner.shared(rows) is None                 # its own way, below
    want, gained = _own_way(owner, rows)
    assert gained == ["s2"] and _ports(want) == ["own2", "y"]
    out, gained, revision = owner.admit(rows)  # type: ignore[misc]
    assert gained == ["s2"] and revision == 13 and owner.relevance.subnets == {"s1", "s2"}
    # From now on the owner's view is {s1, s2}: an s2 upsert reaches it, not the bystander.
    later = [_port(14, "z", "n9", "s2")]
    owner.revision = 13
    assert _ports(bystander.shared(later) or []) == []
    assert _ports(owner.shared(later) or []) == ["z"]


def test_a_removal_of_the_streams_own_port_takes_its_own_way() -> None:
    svc = _svc()
    rows = [_port(11, "own-n1", "n1", "s1", op=ch.DEL)]
    s = _stream(svc, "n1", "s1")
    assert s.shared(rows) is None
    s.admit(rows)
    assert "own-n1" not in s.relevance.own


def test_catching_up_or_holding_some_rows_already_is_not_shared() -> None:
    svc = _svc()
    rows = [_port(11, "a", "n9", "s1"), _port(12, "b", "n9", "s1")]
    behind = _stream(svc, "n1", "s1")
    behind.catching_up = True
    assert behind.shared(rows) is None
    ahead = _stream(svc, "n2", "s1", revision=11)     # has row 11 already
    assert ahead.shared(rows) is None
    assert _ports(_own_way(ahead, rows)[0]) == ["b"]


def test_a_batch_is_known_by_its_rows_not_only_by_their_revisions() -> None:
    share = BatchShare(limit=2)
    rows = [_port(11, "a", "n9", "s1"), _port(12, "b", "n9", "s1")]
    first = share.batch(list(rows))
    assert share.batch(list(rows)) is first           # other lists, the same rows
    other = [_port(11, "a2", "n5", "s1"), _port(12, "b", "n9", "s1")]
    again = share.batch(other)                        # same key, other rows (a restored db)
    assert again is not first and again.touched == {"n5", "n9"}
    share.batch([_port(20, "c", "n9", "s1")])
    share.batch([_port(21, "d", "n9", "s1")])
    assert share.batch(other) is not again            # evicted past the limit


def test_the_live_feeds_metrics_are_added_once_per_pass_of_the_loop() -> None:
    import asyncio

    from ipcontroller.metrics import WATCH_BYTES, WATCH_EVENTS
    from ipcontroller.watch import Tally

    async def run() -> tuple[float, float, float, float]:
        tally = Tally()
        e0, b0 = WATCH_EVENTS._value.get(), WATCH_BYTES._value.get()
        for _ in range(3):
            tally.add([b"ab", b"cde"])
        tally.add([])
        between = WATCH_EVENTS._value.get() - e0
        await asyncio.sleep(0)                       # the loop's next pass
        return between, WATCH_EVENTS._value.get() - e0, WATCH_BYTES._value.get() - b0, \
            tally.events

    between, events, nbytes, left = asyncio.run(run())
    assert (between, events, nbytes, left) == (0, 6, 15, 0)


def test_a_batching_window_out_of_range_is_refused_with_the_flags_name(
        capsys: Any) -> None:
    import pytest

    from ipcontroller.daemon import parse_args
    assert parse_args(["--listen", "127.0.0.1:0", "--watch-batch-max-ms", "20"]
                      ).watch_batch_max_ms == 20
    with pytest.raises(SystemExit):
        parse_args(["--listen", "127.0.0.1:0", "--watch-batch-max-ms", "-1"])
    assert "--watch-batch-max-ms must be in 0..1000" in capsys.readouterr().err
