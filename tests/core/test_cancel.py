import asyncio

from pulses import CancellationToken


async def test_wait_returns_when_cancelled_from_another_task() -> None:
    token = CancellationToken()
    waiter = asyncio.create_task(token.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    token.cancel()
    await asyncio.wait_for(waiter, 1)
    assert token.cancelled


async def test_children_fire_with_their_parent_but_not_the_other_way() -> None:
    parent = CancellationToken()
    child = parent.child()
    grandchild = child.child()
    child.cancel()
    assert grandchild.cancelled
    assert not parent.cancelled
    other = parent.child()
    parent.cancel()
    assert other.cancelled
    assert parent.child().cancelled  # a child of a fired token is born fired


def test_a_token_made_outside_any_loop_works_in_two_loops() -> None:
    token = CancellationToken()

    async def wait_then(cancel: bool) -> None:
        if cancel:
            asyncio.get_running_loop().call_soon(token.cancel)
        await asyncio.wait_for(token.wait(), 1)

    asyncio.run(wait_then(cancel=True))
    asyncio.run(wait_then(cancel=False))  # already fired: returns at once
