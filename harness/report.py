"""The line every benchmark prints last, ``bench NAME: key=value ...``: bench/RESULTS.md and
the component READMEs quote it, so it is formatted in one place."""

from __future__ import annotations

from collections.abc import Mapping


def summary_line(bench: str, figures: Mapping[str, float],
                 decimals: Mapping[str, int] | None = None) -> str:
    """``figures`` in their order: a float with ``decimals[key]`` decimals (none unless
    given), an int (a count) as it is."""
    places = decimals or {}
    parts = [f"{key}={value:.{places.get(key, 0)}f}" if isinstance(value, float)
             else f"{key}={value}" for key, value in figures.items()]
    return f"bench {bench}: " + " ".join(parts)


def print_summary(bench: str, figures: Mapping[str, float],
                  decimals: Mapping[str, int] | None = None) -> None:
    """Print :func:`summary_line`, flushed (whoever runs the benchmark reads it as it comes)."""
    print(summary_line(bench, figures, decimals), flush=True)
