"""Run one SQL statement a person typed (``dnsflow query``, its endpoint in a running ``up``,
the console) and give its result in ClickHouse's own output formats.

The statement is parsed by ClickHouse itself (``formatQuerySingleLine``: exactly one
statement, comments gone, keywords upper-cased) and what runs is that normalised text, so a
second statement hidden after a ``;`` or behind a comment never runs. Read-only by default: only
SELECT/WITH/SHOW/DESCRIBE/EXPLAIN/EXISTS without ``INTO OUTFILE``; anything else needs
``write=True`` (``--write``). chDB keeps settings per session, so read-only is decided here
rather than with ClickHouse's ``readonly`` setting, which would stick to the sink's own
connection in the embedded process; on a ClickHouse server, give the console and people a
read-only user as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from dnsflow.sinks.dsn import one_line

# --format shorthands; any other ClickHouse output format name is passed through
FORMATS = {"table": "PrettyCompactMonoBlock", "json": "JSONEachRow", "csv": "CSVWithNames"}
READ_KINDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
_TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+(\w+)$")
_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.I)


class QueryError(RuntimeError):
    """ClickHouse rejected the statement; the message is ClickHouse's, on one line."""


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def to_json(self) -> bytes:
        return orjson.dumps(
            {"columns": self.columns, "types": self.types, "rows": self.rows}, default=_plain
        )

    @classmethod
    def from_json(cls, data: bytes) -> QueryResult:
        obj = orjson.loads(data)
        return cls(obj["columns"], obj["types"], obj["rows"])


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _cell(value: Any) -> Any:
    """Values as people read them: times without 'T', everything JSON-representable."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_cell(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _cell(v) for k, v in value.items()}
    return _plain(value)


@dataclass(frozen=True)
class Statement:
    """One statement as ClickHouse parsed it."""

    text: str  # normalised, one line, without a trailing FORMAT clause
    kind: str  # its first keyword: SELECT, SHOW, INSERT, DROP, ...
    format: str | None  # the statement's own FORMAT clause, if it had one

    @property
    def reads_only(self) -> bool:
        return self.kind in READ_KINDS and not _OUTFILE.search(self.text)


def parse_statement(client: Any, sql: str, secret_source: str | None = None) -> Statement:
    """Let ClickHouse parse ``sql`` (bound as a parameter, never spliced into SQL)."""
    if not sql.strip().rstrip(";").strip():
        raise QueryError("empty SQL statement")
    try:
        rows = client.query("SELECT formatQuerySingleLine({q:String})",
                            parameters={"q": sql}).result_rows
    except Exception as exc:  # a syntax error: ClickHouse's words, without our wrapper
        message = re.sub(r"\s*In scope SELECT formatQuerySingleLine\(.*", "",
                         clean_error(exc, secret_source))
        raise QueryError(message) from None
    text = rows[0][0]
    own = _TRAILING_FORMAT.search(text)
    if own:
        text = text[:own.start()]
    return Statement(text, text.split(None, 1)[0].upper(), own.group(1) if own else None)


def _checked(client: Any, sql: str, write: bool, secret_source: str | None) -> Statement:
    st = parse_statement(client, sql, secret_source)
    if not write and not st.reads_only:
        raise QueryError(f"{st.kind} changes data or schema and dnsflow query is read-only: "
                         "pass --write to run it" if st.kind not in READ_KINDS else
                         "INTO OUTFILE writes a file and dnsflow query is read-only: pass "
                         "--write to run it")
    return st


def run_formatted(client: Any, sql: str, fmt: str = "table", *, write: bool = False,
                  secret_source: str | None = None) -> bytes:
    """The statement's result as ClickHouse renders it in ``fmt`` (a shorthand of
    :data:`FORMATS` or any output format name; the statement's own FORMAT clause wins);
    ``Ok.`` for a statement that returns no rows."""
    st = _checked(client, sql, write, secret_source)
    try:
        if st.kind in READ_KINDS:
            return client.raw_query(st.text, fmt=st.format or FORMATS.get(fmt, fmt))
        client.command(st.text)
        return b"Ok.\n"
    except Exception as exc:
        raise QueryError(clean_error(exc, secret_source)) from None


def run_sql(client: Any, sql: str, secret_source: str | None = None, *,
            write: bool = False) -> QueryResult:
    """The statement's rows as data (columns, types, rows) for programs: the console and
    the query endpoint's JSON answer. Read-only unless ``write``."""
    st = _checked(client, sql, write, secret_source)
    try:
        if st.kind in READ_KINDS:
            r = client.query(st.text)
            return QueryResult(
                list(r.column_names), [t.name for t in r.column_types],
                [[_cell(v) for v in row] for row in r.result_rows],
            )
        client.command(st.text)
        return QueryResult(["result"], ["String"], [["ok"]])
    except Exception as exc:
        raise QueryError(clean_error(exc, secret_source)) from None


def clean_error(exc: BaseException, secret_source: str | None = None) -> str:
    """ClickHouse's message without the client's appended ``FORMAT Native`` and versions."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\s*FORMAT Native\b", "", text)
    text = text.split(" (version ", 1)[0].split(". Stack trace", 1)[0]
    head, sep, expected = text.partition("Expected one of: ")
    if sep:
        items = [i.strip() for i in expected.split(",")]
        text = head + sep + ", ".join(items[:8]) + (", ..." if len(items) > 8 else "")
    if len(text) > 400:
        text = text[:400] + " ..."
    return one_line(Exception(text), secret_source)
