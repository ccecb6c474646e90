"""Companion keys of every stream name share its Redis Cluster slot, or the name is refused."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from redis.crc import key_slot

from pulses import ConfigurationError
from pulses_redis import RedisBroker
from pulses_redis._keys import StreamKeys
from pulses_redis._scripts import command


def _slot(key: str) -> int:
    return key_slot(key.encode())


@given(
    stream=st.text(alphabet="ab{}:", min_size=1, max_size=12),
    group=st.text(alphabet="g{}", min_size=1, max_size=4),
)
@example(stream="a}b", group="g")
@example(stream="orders}", group="g")
@example(stream="{}x", group="g")
@example(stream="a{}b{c}", group="g")
@example(stream="}{a}", group="}")
def test_companion_keys_share_the_streams_slot_or_the_name_is_refused(
    stream: str, group: str
) -> None:
    start = stream.find("{")
    end = stream.find("}", start + 1) if start != -1 else -1
    tagged = start != -1 and end > start + 1
    if "}" in stream and not tagged:
        with pytest.raises(ConfigurationError, match=repr(stream).replace("{", r"\{")):
            StreamKeys(stream, group)
        return
    keys = StreamKeys(stream, group)
    companions = [keys.dead, keys.delayed, keys.retry, keys.retry_delayed, keys.counts]
    assert {_slot(key) for key in companions} == {_slot(stream)}


def test_plain_and_tagged_names_keep_their_companion_names() -> None:
    assert StreamKeys("emails").dead == "{emails}:dead"
    assert StreamKeys("{orders}", "g").retry == "{orders}:retry:g"
    assert StreamKeys("a{b").dead == "{a{b}:dead"


@pytest.mark.redis
async def test_listing_streams_over_a_dead_letter_key_of_a_refused_shape(
    broker: RedisBroker, name: str
) -> None:
    # "{t-…}b}:dead" cannot belong to the refused "t-…}b": it is the dead letters of
    # the stream "{t-…}b}", whose tag is "t-…".
    await command(broker._conn.client, "XADD", f"{{{name}}}b}}:dead", "*", "f", "v")
    assert f"{{{name}}}b}}" in await broker.streams()
