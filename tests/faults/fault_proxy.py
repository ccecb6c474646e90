"""A small TCP proxy on 127.0.0.1 between workers and Redis, run in a thread, that can
reset every connection, refuse new ones, stall (every connection, or only those open
now: sockets open, no bytes), lose the replies to chosen requests (which reach Redis)
and delay."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from typing import Any


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port: int = s.getsockname()[1]
        self.delay = 0.0
        self.stalled = False
        self.lose_replies_to: tuple[bytes, ...] = ()
        """A request holding one of these byte strings reaches Redis, but its reply and
        every later one on its connection are dropped: a reply lost on the way."""
        self.lost_replies: list[bytes] = []
        """What was dropped so."""
        self.client_closes: list[float] = []
        """When a client closed its side (monotonic): how a stall is seen to be detected."""
        self._conns: dict[tuple[asyncio.StreamWriter, asyncio.StreamWriter], _Link] = {}
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def url(self, query: str = "") -> str:
        return f"redis://127.0.0.1:{self.port}/0{query}"

    def start(self) -> None:
        self._thread.start()
        self.accept()

    def _call(self, fn: Any, *args: Any) -> Any:
        async def run() -> Any:
            return await fn(*args) if asyncio.iscoroutinefunction(fn) else fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def accept(self) -> None:
        """Listen (again) on the same port."""

        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

        self._call(listen)

    def refuse(self) -> None:
        """Stop listening: new connections are refused; open ones carry on."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None

        self._call(close)

    def stall_open(self) -> int:
        """The connections open now fall silent for good, both ways, and stay open; new
        ones work. Returns how many."""

        def stall() -> int:
            for link in self._conns.values():
                link.silent = True
            return len(self._conns)

        count: int = self._call(stall)
        return count

    def reset(self) -> None:
        """Every open connection gets a TCP RST, on both sides."""

        def rst() -> None:
            for pair in list(self._conns):
                for writer in pair:
                    sock = writer.get_extra_info("socket")
                    if sock is not None:
                        with contextlib.suppress(OSError):
                            sock.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                    writer.transport.abort()
            self._conns.clear()

        self._call(rst)

    def stop(self) -> None:
        self.refuse()
        self.reset()

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._call(drain)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        pair = (client_w, server_w)
        link = self._conns[pair] = _Link()
        await asyncio.gather(
            self._pump(client_r, server_w, link, from_client=True),
            self._pump(server_r, client_w, link, from_client=False),
        )
        self._conns.pop(pair, None)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        from_client: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.stalled or link.silent:
                    link.silent = True
                    continue
                if from_client and any(p in data for p in self.lose_replies_to):
                    link.deaf = True  # before the request goes: its reply may be quick
                elif not from_client and link.deaf:
                    self.lost_replies.append(data)
                    continue
                writer.write(data)
                await writer.drain()
            if from_client:
                self.client_closes.append(time.monotonic())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()


class _Link:
    """One proxied connection. Once bytes were dropped on it, it never forwards them
    again that way: a stream with a hole would be read as garbage."""

    __slots__ = ("deaf", "silent")

    def __init__(self) -> None:
        self.silent = False
        """Nothing goes through, either way (a stall)."""
        self.deaf = False
        """Replies are dropped; requests still go through."""
