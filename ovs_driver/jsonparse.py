"""A JSON parser for python-ovs's JSON-RPC stream that runs in C when python-ovs's
own C parser is missing.

python-ovs parses messages with ``ovs._json`` when the package was built against
libopenvswitch. Installed from PyPI on a machine without the OVS headers and library
(Debian ships no libopenvswitch-dev), it falls back to a character-at-a-time parser
in Python: ~1.5 ms for one 900-character update on this machine against 7 us with
the stdlib, so every port transaction would pay several milliseconds just reading
the server's answer and updates. :func:`install` then puts :class:`StreamParser` in
its place. It keeps python-ovs's contract (``feed`` returns how many characters it
used, ``is_done``, ``finish`` returns the value or an error text), finds where the
top-level value ends with a small bracket/string scanner whose state survives
across feeds (so the work stays linear), and lets ``json.JSONDecoder.raw_decode``
parse exactly that slice (a message that arrives whole, the usual case, is parsed
in one call without the scanner). Whole-document parsing (``ovs.json.from_string``,
``check_trailer``) keeps python-ovs's own parser: it is not on the hot path.
"""
from __future__ import annotations

import json
import logging
import re
from typing import Any

import ovs.json

log = logging.getLogger(__name__)

# Outside a string only brackets and quotes matter to find where a value ends; inside
# a string only the quote and the backslash do. Jumping between them with a regex
# keeps the scan in C over the long runs of ordinary characters.
_OUTSIDE = re.compile(r'["{}\[\]]')
_INSIDE = re.compile(r'["\\]')
_SPACE = " \t\r\n"
_DECODER = json.JSONDecoder()
_ORIGINAL: Any = ovs.json.Parser


class StreamParser(_ORIGINAL):  # type: ignore[misc]
    """One JSON-RPC message (an object or array) fed in pieces.

    A subclass only so that python-ovs's own parser keeps working once this class
    stands in ``ovs.json.Parser``: its code names its states ``Parser.__lex_start``
    and so on, found here by inheritance. None of its code runs for a StreamParser.
    """

    def __new__(cls, check_trailer: bool = False) -> Any:
        if check_trailer:
            return original_parser(check_trailer=True)
        return object.__new__(cls)

    def __init__(self, check_trailer: bool = False) -> None:
        self._buf: list[str] = []
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._started = False
        self._done = False
        self._result: Any = None

    def is_done(self) -> bool:
        return self._done

    def finish(self) -> Any:
        """The parsed value, or (python-ovs's convention) a str saying what is wrong."""
        if not self._done:
            return "unexpected end of input"
        return self._result

    def feed(self, s: str) -> int:
        """Consume ``s`` up to the end of the value; returns how much was used."""
        if self._done:
            return 0
        if self._started:
            return self._feed_more(s)
        pos, n = 0, len(s)
        while pos < n and s[pos] in _SPACE:
            pos += 1
        if pos == n:
            return n
        if s[pos] not in "{[":
            return self._fail(f"a message must be an object or array, not {s[pos:pos + 20]!r}")
        self._started = True
        try:
            # Usually the whole message is here: one pass in C. A prefix of an object
            # or array never parses, so success means it is complete.
            self._result, end = _DECODER.raw_decode(s, pos)
        except json.JSONDecodeError:
            pass  # cut short, or malformed: the scanner tells which
        else:
            self._done = True
            return end
        return self._feed_more(s[pos:]) + pos

    def _feed_more(self, s: str) -> int:
        end = self._scan(s, 0)
        if end < 0:
            self._buf.append(s)
            return len(s)
        self._buf.append(s[:end])
        text = "".join(self._buf)
        self._buf = []
        try:
            self._result, used = _DECODER.raw_decode(text)
        except json.JSONDecodeError as exc:
            return self._fail(f"syntax error: {exc}")
        if used != len(text):
            return self._fail("trailing data inside one message")
        self._done = True
        return end

    def _fail(self, message: str) -> int:
        self._done = True
        self._result = message
        return 0

    def _scan(self, s: str, pos: int) -> int:
        """Index just past the end of the top-level value in ``s``, or -1."""
        n = len(s)
        while pos < n:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    pos += 1
                    continue
                m = _INSIDE.search(s, pos)
                if m is None:
                    return -1
                pos = m.end()
                if m.group() == "\\":
                    self._escape = True
                else:
                    self._in_string = False
                continue
            m = _OUTSIDE.search(s, pos)
            if m is None:
                return -1
            pos = m.end()
            ch = m.group()
            if ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 0:
                    return pos
        return -1


def original_parser(check_trailer: bool = False) -> Any:
    """python-ovs's own parser (its ``__new__`` looks ``Parser`` up in its module,
    which is ours once installed, so it is built without it)."""
    parser = object.__new__(_ORIGINAL)
    parser.__init__(check_trailer=check_trailer)
    return parser


def install() -> bool:
    """Use :class:`StreamParser` for python-ovs's JSON-RPC if it has no C parser;
    True if installed. python-ovs looks ``ovs.json.Parser`` up per message."""
    if ovs.json.PARSER == ovs.json.PARSER_C or ovs.json.Parser is StreamParser:
        return False
    ovs.json.Parser = StreamParser
    log.info("python-ovs has no C JSON parser (ovs._json); using the stdlib's for OVSDB")
    return True
