"""One way to reach ClickHouse: ``chdb://PATH`` (embedded) or ``http(s)://user:pw@host:port/db``.

Both go through clickhouse-connect so the sink, migrations and queries share one code path.
DSNs are redacted (:func:`redact`) before they reach a log line or an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("chdb", "http", "https")


class DsnError(ValueError):
    """A DSN that cannot be used; the message never contains the password."""


@dataclass(frozen=True)
class Dsn:
    raw: str
    scheme: str
    path: str | None  # chDB data directory

    @property
    def embedded(self) -> bool:
        return self.scheme == "chdb"

    def __str__(self) -> str:  # never print credentials by accident
        return redact(self.raw)


def redact(dsn: str) -> str:
    """``http://user:secret@h:8123/db`` → ``http://user:***@h:8123/db``."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable dsn>"
    if parts.password is None and "@" not in parts.netloc:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def parse(dsn: str) -> Dsn:
    try:
        parts = urlsplit(dsn)
    except ValueError:
        raise DsnError(f"clickhouse DSN {redact(dsn)!r}: not a URL") from None
    if parts.scheme not in SCHEMES:
        raise DsnError(
            f"clickhouse DSN {redact(dsn)!r}: scheme must be chdb://PATH, http:// or https://"
        )
    if parts.scheme == "chdb":
        path = (parts.netloc + parts.path) if parts.netloc not in ("", "memory") else parts.path
        if not path:
            raise DsnError(f"clickhouse DSN {dsn!r}: chdb:// needs a data directory path")
        return Dsn(dsn, "chdb", path)
    if not parts.hostname:
        raise DsnError(f"clickhouse DSN {redact(dsn)!r}: missing host")
    return Dsn(dsn, parts.scheme, None)


def connect(dsn: str | Dsn, *, credentials: tuple[str, str] | None = None,
            **settings: Any) -> Any:
    """A clickhouse-connect client for ``dsn``; errors name the redacted DSN, not the password.
    ``credentials`` (user, password) replace the DSN's own (a server DSN only)."""
    import clickhouse_connect
    from clickhouse_connect.driver.exceptions import ClickHouseError

    d = dsn if isinstance(dsn, Dsn) else parse(dsn)
    try:
        if d.embedded:
            assert d.path is not None
            return clickhouse_connect.get_client(dsn=f"chdb://{d.path}", settings=settings)
        login = {"username": credentials[0], "password": credentials[1]} if credentials else {}
        return clickhouse_connect.get_client(
            dsn=d.raw, settings=settings, connect_timeout=5, send_receive_timeout=60, **login
        )
    except ClickHouseError as exc:
        raise ConnectError(f"clickhouse {d}: {one_line(exc, d.raw)}") from None


class ConnectError(RuntimeError):
    """ClickHouse could not be reached or opened (message already redacted)."""


def one_line(exc: BaseException, secret_source: str | None = None) -> str:
    """ClickHouse's own message on one line, without the echoed SQL tail, stack or password."""
    text = str(exc).strip()
    # clickhouse-connect prefixes/suffixes; keep the DB::Exception line when there is one.
    for line in text.splitlines():
        if "DB::Exception" in line or line.startswith("Code:"):
            text = line
            break
    else:
        text = text.splitlines()[0] if text else type(exc).__name__
    text = text.split(" (version ", 1)[0].split(". Stack trace", 1)[0]
    errno = re.search(r"\[Errno -?\d+\] ([^\"')]+)", text)
    if errno and "DB::Exception" not in text:  # a socket error: say which, not the retry story
        text = errno.group(1).strip().lower()
    if secret_source:
        pw = urlsplit(secret_source).password if "://" in secret_source else None
        if pw:
            text = text.replace(pw, "***")
    return text.strip()


def quiet_client_logs(args: object) -> None:
    """The HTTP client logs every retry as a WARNING; our one-line error already says it.
    Keep them unless the user asked for ``--log-level DEBUG``/``INFO``."""
    import logging

    if getattr(args, "log_level", "WARNING") in ("WARNING", "ERROR"):
        # clickhouse_connect resets the "urllib3" level on import, so pin the children
        for name in ("urllib3.connectionpool", "clickhouse_connect"):
            logging.getLogger(name).setLevel(logging.ERROR)
