"""A raw DNS exchange over UDP from async tests: the bytes go out exactly as given (malformed
packets included) and the reply comes back unparsed, so each test decides how to check it."""

from __future__ import annotations

import asyncio


async def udp_exchange(port: int, packet: bytes, timeout: float = 2.0,
                       host: str = "127.0.0.1") -> bytes | None:
    """Send ``packet`` to ``host:port``; the first datagram back, or None when none came."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[bytes] = loop.create_future()

    class Proto(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            if not fut.done():
                fut.set_result(data)

    transport, _ = await loop.create_datagram_endpoint(Proto, remote_addr=(host, port))
    transport.sendto(packet)
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        return None
    finally:
        transport.close()
