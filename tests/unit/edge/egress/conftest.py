"""The egress agent's nft layer faked at its boundary: a recorder of the JSON commands and
text scripts the agent would hand to libnftables (no kernel, no root)."""

from __future__ import annotations

from typing import Any

import pytest

from dnsflow.edge.egress.agent import EgressAgent
from dnsflow.edge.egress.nft import NftError


class RecordingNft:
    backend = "recording"

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.scripts: list[str] = []
        self.fail = False

    def run(self, commands: list[dict[str, Any]]) -> Any:
        if self.fail:
            raise NftError("Error: Could not process rule: No such file or directory")
        self.batches.append(commands)
        return None

    def run_text(self, script: str) -> None:
        if self.fail:
            raise NftError("Error: table refused")
        self.scripts.append(script)

    def list_json(self, what: dict[str, Any]) -> Any:
        return {"nftables": []}

    def close(self) -> None:
        pass

    def elements(self, op: str = "add") -> list[tuple[str, list[Any], int | None]]:
        out = []
        for batch in self.batches:
            for cmd in batch:
                el = cmd.get(op, {}).get("element")
                if el is None or not el["name"].startswith("allow"):
                    continue
                for e in el["elem"]:
                    inner = e.get("elem", e)
                    val = inner.get("val", inner)
                    out.append((el["name"], val["concat"], inner.get("timeout")))
        return out


@pytest.fixture
def nft(monkeypatch: pytest.MonkeyPatch) -> RecordingNft:
    rec = RecordingNft()
    monkeypatch.setattr(EgressAgent, "nft_factory", lambda: rec)
    return rec
