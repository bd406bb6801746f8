"""The one YAML file loader: every error names the file and, for bad YAML, the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsflow.yaml_file import load_yaml


class Oops(ValueError):
    pass


def test_reads_one_document(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("a: 1\n")
    assert load_yaml(f, f"thing {f}", Oops) == {"a": 1}


def test_empty_is_none(tmp_path: Path) -> None:
    f = tmp_path / "a.yaml"
    f.write_text("# nothing\n")
    assert load_yaml(f, "thing", Oops) is None


@pytest.mark.parametrize(("content", "message"), [
    (None, r"^thing .*missing\.yaml: cannot read \("),
    (b"a: \xff\n", r"^thing .*missing\.yaml: not UTF-8 \(byte 3\)$"),
    (b"a: 1\nb: [\n", r"^thing .*missing\.yaml line 3: invalid YAML$"),
])
def test_errors_name_file_and_place(tmp_path: Path, content: bytes | None,
                                    message: str) -> None:
    f = tmp_path / "missing.yaml"
    if content is not None:
        f.write_bytes(content)
    with pytest.raises(Oops, match=message):
        load_yaml(f, f"thing {f}", Oops)
