import pytest

from pulses import InvalidURL, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:s3cret@cache:6379/0", "redis://app:***@cache:6379/0"),
        ("redis://:s3cret@cache", "redis://:***@cache"),
        ("rediss://u:p@ss:w@rd@host/1", "rediss://u:***@host/1"),
        ("redis://s3cret@cache", "redis://***@cache"),
        ("redis://cache:6379", "redis://cache:6379"),
        ("memory://", "memory://"),
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
