"""Run one SQL statement and render its result as a table, JSON lines or CSV.

Shared by ``dnsflow query`` (direct connection) and the embedded query endpoint, so both
give the same answers and the same one-line errors.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
from dnsflow.sinks.dsn import one_line

FORMATS = ("table", "json", "csv")
_ROWS_STATEMENT = re.compile(r"^\s*(\(?\s*SELECT|WITH|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS)\b", re.I)


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


def run_sql(client: Any, sql: str, secret_source: str | None = None) -> QueryResult:
    """Execute ``sql``; rows for queries, an ``ok`` row for statements; QueryError otherwise."""
    text = sql.strip().rstrip(";").strip()
    if not text:
        raise QueryError("empty SQL statement")
    try:
        if _ROWS_STATEMENT.match(text):
            r = client.query(text)
            return QueryResult(
                list(r.column_names), [t.name for t in r.column_types],
                [[_cell(v) for v in row] for row in r.result_rows],
            )
        out = client.command(text)
        return QueryResult(["result"], ["String"], [[_cell(out) if out else "ok"]])
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


def render(result: QueryResult, fmt: str) -> str:
    if fmt == "json":
        return "".join(
            orjson.dumps(dict(zip(result.columns, row, strict=True)), default=_plain).decode()
            + "\n"
            for row in result.rows
        )
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(result.columns)
        for row in result.rows:
            w.writerow([_text(v) for v in row])
        return buf.getvalue()
    return _table(result)


def _text(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list | dict):
        return orjson.dumps(value, default=_plain).decode()
    return str(value)


def _table(result: QueryResult) -> str:
    cells = [[_text(v) for v in row] for row in result.rows]
    widths = [len(c) for c in result.columns]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    numeric = [bool(re.match(r"^(U?Int|Float|Decimal)", t)) for t in result.types]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    out = [line(result.columns), line(["-" * w for w in widths])]
    out.extend(line(row) for row in cells)
    out.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(out) + "\n"
