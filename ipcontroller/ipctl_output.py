"""How ipctl prints: the full messages as JSON for scripts, chosen columns as a table (or
`field  value` lines) for people."""
from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .ipctl_client import IpctlSettings

# Wide enough that a pipe never wraps a row; the table itself stays as narrow as its content.
PIPE_WIDTH = 100_000


def to_dict(msg: Message) -> dict[str, Any]:
    """Every field, defaults included, with numbers as numbers, so scripts need no guessing."""
    return MessageToDict(msg, preserving_proto_field_name=True,
                         always_print_fields_with_no_presence=True,
                         unquote_int64_if_possible=True)


def print_json(doc: Message | Iterable[Message]) -> None:
    data: Any = to_dict(doc) if isinstance(doc, Message) else [to_dict(m) for m in doc]
    click.echo(json.dumps(data, indent=2))


Column = tuple[str, Callable[[Any], object]]


def _cell(value: object) -> str:
    """A value as the table shows it, escaped: rich reads cells as markup, and many values
    come from pods (an owner `team-x/app[/]` must print as itself, not break the table)."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "-" if value is None or value == "" else escape(str(value))


def print_table(rows: Iterable[Any], columns: Sequence[Column], *, header: bool = True) -> None:
    """The one table renderer: colour only on a terminal, and never wider than its content."""
    table = Table(box=None, pad_edge=False, show_header=header, header_style="bold",
                  show_edge=False)
    for title, _get in columns:
        table.add_column(title, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(_cell(value_of(row)) for _title, value_of in columns))
    out = sys.stdout
    if out.isatty():
        Console(file=out).print(table)
        return
    buf = io.StringIO()
    Console(file=buf, width=PIPE_WIDTH, no_color=True, color_system=None,
            force_terminal=False, highlight=False).print(table)
    # rich pads the last column; pipes and diffs are happier without trailing blanks.
    click.echo("\n".join(line.rstrip() for line in buf.getvalue().splitlines()))


def emit(s: IpctlSettings, rows: Sequence[Any], columns: Sequence[Column]) -> None:
    """A list command's output: the full messages as a JSON array, or the chosen columns."""
    if s.output == "json":
        print_json(rows)
    else:
        print_table(rows, columns)


def emit_fields(s: IpctlSettings, msg: Message, fields: Sequence[tuple[str, object]]) -> None:
    """One object: the full message as JSON, or `field  value` lines for a human."""
    if s.output == "json":
        print_json(msg)
    else:
        print_table(fields, [("FIELD", lambda f: f[0]), ("VALUE", lambda f: f[1])],
                    header=False)


def emit_done(s: IpctlSettings, msg: Message, text: str) -> None:
    """A mutation: the response as JSON for scripts, a sentence for humans."""
    if s.output == "json":
        print_json(msg)
    else:
        click.echo(text)
