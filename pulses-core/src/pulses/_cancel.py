"""A cancellation token: the one way to ask a running app or handler to stop."""

from __future__ import annotations

import asyncio
import weakref

__all__ = ["CancellationToken"]


class CancellationToken:
    """Fires once; children fire with their parent, never the other way round.

    Not bound to an event loop, so one token can be made before ``asyncio.run`` and
    cancelled from a signal handler or another thread's ``call_soon_threadsafe``.

    >>> token = CancellationToken()
    >>> child = token.child()
    >>> token.cancel()
    >>> child.cancelled
    True
    """

    __slots__ = ("__weakref__", "_cancelled", "_children", "_waiters")

    def __init__(self) -> None:
        self._cancelled = False
        self._waiters: list[asyncio.Future[None]] = []
        self._children: weakref.WeakSet[CancellationToken] = weakref.WeakSet()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        """Fire the token and all its children; later calls do nothing."""
        if self._cancelled:
            return
        self._cancelled = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done() and not waiter.get_loop().is_closed():
                waiter.set_result(None)
        for child in list(self._children):
            child.cancel()

    async def wait(self) -> None:
        """Return once the token has fired."""
        if self._cancelled:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def child(self) -> CancellationToken:
        """A token that fires when this one does, and can also be fired on its own."""
        token = CancellationToken()
        if self._cancelled:
            token._cancelled = True
        else:
            self._children.add(token)
        return token

    def __repr__(self) -> str:
        return f"CancellationToken(cancelled={self._cancelled})"
