"""Progress on long steps (issue #13): a bar on a terminal that clears itself, nothing in a pipe
or a log; used by `dnsflow replay` and `dnsflow sink --migrate`."""

from __future__ import annotations

import io

from dnsflow.progress import Progress
from dnsflow.sinks.dsn import connect
from dnsflow.sinks.migrate import load_migrations, migrate


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _screen(raw: str) -> str:
    """What a terminal shows at the end: each \\r returns to the line's start."""
    line: list[str] = []
    col = 0
    for ch in raw:
        if ch == "\r":
            col = 0
            continue
        if col < len(line):
            line[col] = ch
        else:
            line.append(ch)
        col += 1
    return "".join(line)


def test_a_bar_on_a_terminal_that_clears_itself() -> None:
    tty = Terminal()
    p = Progress("replay", total=200, stream=tty, every=0)
    p.pos = 50
    p.show("1000 lines")
    assert "replay [#######" in tty.getvalue() and " 25% 1000 lines" in tty.getvalue()
    p.pos = 200
    p.show("4000 lines")
    assert "100% 4000 lines" in tty.getvalue()
    p.done()
    assert _screen(tty.getvalue()).strip() == ""  # nothing left on the line


def test_nothing_when_not_a_terminal() -> None:
    pipe = io.StringIO()
    p = Progress("replay", total=10, stream=pipe, every=0)
    p.show("x", force=True)
    p.done()
    assert pipe.getvalue() == ""


def test_migrate_shows_each_file(tmp_path) -> None:
    tty = Terminal()
    p = Progress("migrate", stream=tty, every=0)
    client = connect(f"chdb://{tmp_path / 'chdb'}")
    try:
        migrate(client, progress=p)
    finally:
        client.close()
    p.done()
    shown = tty.getvalue()
    names = [m.name for m in load_migrations()]
    assert all(name in shown for name in names)
    assert p.total == len(names) and _screen(shown).strip() == ""
