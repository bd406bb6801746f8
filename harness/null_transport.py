"""An asyncio transport that goes nowhere, for feeding a tap ``Connection`` bytes in-process
(tests and ``bench.tap --inproc``): what its ``data_received`` path asks of a transport."""

from __future__ import annotations


class NullTransport:
    """No peer address, never closing; writes (ACCEPT, FINISH) and close are dropped."""

    def get_extra_info(self, name: str) -> None:
        return None

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass
