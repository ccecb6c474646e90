import pytest

from pulses import InvalidURL, redact_url
from pulses._urls import redact_secrets, url_secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:s3cret@cache:6379/0", "redis://app:***@cache:6379/0"),
        ("redis://:s3cret@cache", "redis://:***@cache"),
        ("rediss://u:p@ss:w@rd@host/1", "rediss://u:***@host/1"),
        ("redis://s3cret@cache", "redis://***@cache"),
        ("redis://cache:6379", "redis://cache:6379"),
        ("memory://", "memory://"),
        ("unix:///tmp/r.sock?db=1&password=s3cret", "unix:///tmp/r.sock?db=1&password=***"),
        ("redis://h/0?Password=s3cret&ssl=1", "redis://h/0?Password=***&ssl=1"),
        ("redis://u:p@h/0?password=q", "redis://u:***@h/0?password=***"),
    ],
)
def test_redact_url_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize("url", ["", "localhost:6379", "redis//host", "://host"])
async def test_a_url_without_a_scheme_is_invalid_and_named(url: str) -> None:
    import pulses

    with pytest.raises(InvalidURL, match="scheme"):
        await pulses.connect(url, plugins=pulses.plugin_manager(load_entrypoints=False))


async def test_an_invalid_url_never_shows_its_password() -> None:
    import pulses

    with pytest.raises(InvalidURL) as info:
        await pulses.connect(
            "hostonly:s3cret@x", plugins=pulses.plugin_manager(load_entrypoints=False)
        )
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("url", ["redis:/x", "redis:cache/0", "memory:", "unix:/run/redis.sock"])
async def test_a_url_missing_the_slashes_says_so_not_that_it_has_no_scheme(url: str) -> None:
    import pulses

    with pytest.raises(InvalidURL) as info:
        await pulses.connect(url, plugins=pulses.plugin_manager(load_entrypoints=False))
    assert "has no scheme" not in str(info.value)
    assert "lacks the '//' after its scheme" in str(info.value)
    assert f"'{url.partition(':')[0]}://...'" in str(info.value)


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("redis://app:s3cret@cache:6379/0", {"s3cret"}),
        ("redis://:p%40ss@cache", {"p%40ss", "p@ss"}),
        ("redis://bare@cache", {"bare"}),
        ("unix:///r.sock?db=1&password=q%2Fw", {"q%2Fw", "q/w"}),
        ("redis://cache:6379/0", set()),
    ],
)
def test_url_secrets_finds_every_password_as_written_and_decoded(
    url: str, secrets: set[str]
) -> None:
    assert set(url_secrets(url)) == secrets


def test_redact_secrets_hides_each_secret_and_the_longest_first() -> None:
    text = "AUTH failed for pass and password (user pass)"
    assert redact_secrets(text, ["pass", "password"]) == "AUTH failed for *** and *** (user ***)"
    assert redact_secrets("nothing here", ["", "x"]) == "nothing here"
