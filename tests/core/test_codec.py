from hypothesis import given
from hypothesis import strategies as st

from pulses.broker import decode_fields, encode_fields


@given(
    payload=st.binary(),
    headers=st.dictionaries(st.text(), st.text(), max_size=4),
    prior=st.integers(min_value=0, max_value=10**6),
    enqueued=st.one_of(st.none(), st.integers(min_value=1, max_value=2**50)),
)
def test_what_pulses_writes_it_reads_back(
    payload: bytes, headers: dict[str, str], prior: int, enqueued: int | None
) -> None:
    assert decode_fields(encode_fields(payload, headers, prior, enqueued)) == (
        payload,
        headers,
        prior,
        enqueued,
    )


@given(st.lists(st.binary(max_size=20), max_size=12))
def test_any_foreign_entry_decodes_without_raising(raw: list[bytes]) -> None:
    payload, headers, prior, enqueued = decode_fields(raw)
    assert isinstance(payload, bytes)
    # The types as found at run time: a foreign entry's bytes must still decode to text.
    assert {type(text) for item in headers.items() for text in item} <= {str}
    assert prior >= 0
    assert enqueued is None or enqueued > 0


def test_foreign_fields_are_not_mistaken_for_ours() -> None:
    raw = [b"payload", b"first", b"payload", b"second", b"headers", b"\xff{", b"x", b"y"]
    assert decode_fields(raw) == (b"first", {}, 0, None)
    assert decode_fields([b"headers", b'{"a": 1}', b"deliveries", b"-3"]) == (b"", {}, 0, None)
