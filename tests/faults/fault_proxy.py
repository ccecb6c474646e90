"""A small TCP proxy on 127.0.0.1 between workers and Redis, run in a thread, that can
reset every connection, refuse new ones, stall (sockets open, no bytes) and delay."""

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
        self.client_closes: list[float] = []
        """When a client closed its side (monotonic): how a stall is seen to be detected."""
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
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
        self._conns.add(pair)
        doomed = [False]  # bytes dropped during a stall: never forward on it again
        await asyncio.gather(
            self._pump(client_r, server_w, doomed, from_client=True),
            self._pump(server_r, client_w, doomed, from_client=False),
        )
        self._conns.discard(pair)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        doomed: list[bool],
        *,
        from_client: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.stalled or doomed[0]:
                    doomed[0] = True
                    continue
                writer.write(data)
                await writer.drain()
            if from_client:
                self.client_closes.append(time.monotonic())
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()
