from hypothesis import given
from hypothesis import strategies as st

from pulses import DeadLetter, Retry
from pulses._policy import RetryPolicy, jittered_backoff


@given(
    failures=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=1e4),
    cap=st.floats(min_value=0, max_value=1e7),
)
def test_backoff_stays_under_the_exponential_cap(failures: int, base: float, cap: float) -> None:
    assert (
        0 <= jittered_backoff(failures, base, cap) <= min(cap, base * 2.0 ** min(failures - 1, 62))
    )


def test_backoff_is_full_jitter_not_a_fixed_ladder() -> None:
    # 200 draws all in the upper half of [0, 8] would happen with probability 2**-200.
    draws = [jittered_backoff(4, 1.0, 30.0) for _ in range(200)]
    assert max(draws) <= 8.0
    assert min(draws) < 4.0 < max(draws)


@given(
    deliveries=st.integers(min_value=1, max_value=200),
    base=st.integers(min_value=0, max_value=10_000),
    extra=st.integers(min_value=0, max_value=10**7),
)
def test_retry_delays_are_the_shared_backoff_in_milliseconds(
    deliveries: int, base: int, extra: int
) -> None:
    policy = RetryPolicy(max_deliveries=10**6, backoff_ms=base, backoff_max_ms=base + extra)
    delay = policy.delay_ms(deliveries)
    assert 0 <= delay <= min(base + extra, base * 2 ** (deliveries - 1))


def test_failures_retry_until_max_deliveries_then_dead_letter_with_the_reason() -> None:
    policy = RetryPolicy(max_deliveries=3, backoff_ms=10, backoff_max_ms=100)
    assert isinstance(policy.on_failure(1, "ValueError: boom"), Retry)
    assert isinstance(policy.on_failure(2, "ValueError: boom"), Retry)
    last = policy.on_failure(3, "ValueError: boom")
    assert isinstance(last, DeadLetter)
    assert "ValueError: boom" in last.reason


def test_only_a_delivery_beyond_the_limit_is_exhausted() -> None:
    policy = RetryPolicy(max_deliveries=3, backoff_ms=0, backoff_max_ms=0)
    assert not policy.exhausted(3)
    assert policy.exhausted(4)
