"""Argument handling, errors and exit codes of the pulses command (click's runner)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import pulses._worker
from pulses.cli import EXIT, main
from pulses_memory import MemoryBroker


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("worker", "publish", "info", "dlq", "trim"):
        assert command in result.output


def test_version_names_core_and_every_installed_broker_package(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    for package in ("pulses-core", "pulses-memory", "pulses-redis"):
        assert f"{package} {metadata.version(package)}" in result.stdout.splitlines()


def _commands(command: click.Command, path: str = "pulses") -> Iterator[tuple[str, click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _commands(sub, f"{path} {name}")


def test_every_flag_of_every_command_has_a_pulses_environment_variable() -> None:
    for path, command in _commands(main):
        for param in command.params:
            # --help and --version are actions that set nothing.
            if not isinstance(param, click.Option) or not param.expose_value:
                continue
            envvars = [param.envvar] if isinstance(param.envvar, str) else param.envvar or []
            assert any(e.startswith("PULSES_") for e in envvars), f"{path} {param.opts}"
            assert param.show_envvar, f"{path} {param.opts}: --help should name its variable"


@pytest.mark.parametrize(
    ("spec", "code", "words"),
    [
        ("broken:app", "import", "cannot import module 'broken': ModuleNotFoundError"),
        ("missing_module:app", "import", "cannot import module 'missing_module'"),
        ("attribute_error:app", "import", "cannot import module 'attribute_error': Attribute"),
        ("jobs:nothing", "not_an_app", "has no attribute 'nothing'"),
        ("jobs:not_an_app", "not_an_app", "is a int, not a pulses.App"),
        ("jobs", "not_an_app", "jobs is a module, not a pulses.App"),
        ("jobs:app app", "not_an_app", "does not name an app"),
        ("bad_settings:app", "config", "NoWorkers.WORKERS"),
    ],
)
def test_a_bad_app_spec_is_one_clear_line_and_its_own_exit_code(
    runner: CliRunner, app_dir: Path, spec: str, code: str, words: str
) -> None:
    result = runner.invoke(main, ["worker", spec])
    assert result.exit_code == EXIT[code]
    assert result.stderr.startswith("pulses: error: ")
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_verbose_adds_the_traceback_of_the_cause(runner: CliRunner, app_dir: Path) -> None:
    result = runner.invoke(main, ["worker", "broken:app", "-v"])
    assert result.exit_code == EXIT["import"]
    assert "Traceback" in result.stderr
    assert "import does_not_exist" in result.stderr


@pytest.mark.parametrize("url", ["amqp://u:hunter2@h/", "postgres://u:hunter2@db/0"])
def test_an_unknown_scheme_suggests_no_package_that_pulses_does_not_ship(
    runner: CliRunner, app_dir: Path, url: str
) -> None:
    result = runner.invoke(main, ["worker", "jobs:app", "--url", url])
    assert result.exit_code == EXIT["config"]
    assert f"no broker for '{url.partition(':')[0]}://'" in result.stderr
    assert "pip install" not in result.stderr
    assert "hunter2" not in result.stderr


def test_a_url_missing_its_slashes_is_named_for_what_it_lacks(runner: CliRunner) -> None:
    result = runner.invoke(main, ["info", "redis:/x"])
    assert result.exit_code == EXIT["config"]
    assert "lacks the '//' after its scheme" in result.stderr


def test_the_worker_runs_the_apps_own_broker_whatever_redis_url_says(
    runner: CliRunner,
    app_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Hosting platforms set REDIS_URL for whatever Redis is attached, often a cache.
    monkeypatch.setenv("REDIS_URL", "redis://cache.example:6379/0")
    with caplog.at_level(logging.INFO):
        result = runner.invoke(main, ["worker", "jobs:app", "--check"])
    assert result.exit_code == 0, result.output
    assert "ok: memory://cli-tests" in result.stdout
    assert "broker memory://cli-tests, the app's own" in caplog.text
    assert "REDIS_URL is set but never overrides a broker the code configures" in caplog.text


def test_the_worker_takes_pulses_url_over_the_apps_broker_and_says_so(
    runner: CliRunner,
    app_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PULSES_URL", "memory://elsewhere")
    with caplog.at_level(logging.INFO):
        result = runner.invoke(main, ["worker", "jobs:app", "--check"])
    assert result.exit_code == 0, result.output
    assert "ok: memory://elsewhere" in result.stdout
    assert "broker memory://elsewhere, from PULSES_URL" in caplog.text
    result = runner.invoke(main, ["worker", "jobs:app", "--check", "--url", "kafka://u:pw@k"])
    assert "'kafka://'" in result.stderr  # the flag wins over PULSES_URL


def test_more_than_one_process_on_a_process_local_broker_is_refused(
    runner: CliRunner, app_dir: Path
) -> None:
    result = runner.invoke(main, ["worker", "jobs:app", "-w", "2"])
    assert result.exit_code == EXIT["config"]
    assert "lives inside one process" in result.stderr


def test_check_passes_on_a_reachable_broker(runner: CliRunner, app_dir: Path) -> None:
    result = runner.invoke(main, ["worker", "jobs:app", "--check"])
    assert result.exit_code == 0, result.output
    assert "ok: memory://cli-tests" in result.stdout


def test_burst_on_empty_streams_exits_0_and_keeps_the_hosts_log_handlers(
    runner: CliRunner, app_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # pytest's capturing handlers stand for an application's own logging setup.
    handlers = list(logging.getLogger().handlers)
    with caplog.at_level(logging.INFO):
        result = runner.invoke(main, ["worker", "jobs:app", "--burst"])
    assert result.exit_code == 0, result.output
    assert logging.getLogger().handlers == handlers
    assert "pulses starting on memory://cli-tests" in caplog.text
    assert "Record[jobs]x2" in caplog.text
    assert "pulses stopped: handled 0" in caplog.text


def test_burst_leaves_a_publish_delayed_far_ahead_for_later_and_says_so(
    runner: CliRunner,
    app_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = f"burst-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("STREAM", stream)
    monkeypatch.setattr(pulses._worker, "BURST_GRACE", 0.3)  # the shipped 5 s, made quick

    async def publish() -> None:
        broker = MemoryBroker("cli-tests")  # the app's, by name, in this process
        await broker.publish(stream, b"now")
        await broker.publish(stream, b"in ten minutes", delay_ms=600_000)

    asyncio.run(publish())
    with caplog.at_level(logging.INFO):
        result = runner.invoke(main, ["worker", "jobs:app", "--burst"])
    assert result.exit_code == 0, result.output
    assert "pulses stopped: handled 1" in caplog.text
    assert f"left for a later run, none due within 0.3s: {stream}: delayed publishes 1" in (
        caplog.text
    )


def test_publish_to_a_process_local_broker_is_refused(runner: CliRunner) -> None:
    result = runner.invoke(main, ["publish", "memory://x", "s", "hi"])
    assert result.exit_code == EXIT["config"]
    assert "lives inside one process" in result.stderr
    assert "published" not in result.stdout


def test_publish_rejects_a_header_without_a_value(runner: CliRunner) -> None:
    result = runner.invoke(main, ["publish", "memory://pub", "s", "x", "-H", "novalue"])
    assert result.exit_code == EXIT["usage"]
    assert "is not KEY=VALUE" in result.stderr


def test_publish_takes_a_payload_or_a_file_not_both(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "body").write_bytes(b"x")
    result = runner.invoke(
        main, ["publish", "memory://p", "s", "x", "--file", str(tmp_path / "body")]
    )
    assert result.exit_code == EXIT["usage"]
    assert "not both" in result.stderr


def _publish_in_process(url_name: str, stream: str, payloads: list[bytes]) -> None:
    async def go() -> None:
        await MemoryBroker(url_name).publish_many(stream, payloads)

    asyncio.run(go())


def test_info_json_and_dlq_on_the_memory_broker(runner: CliRunner) -> None:
    # Each command connects anew; a named memory broker keeps its data in the process.
    _publish_in_process("info", "orders", [b"x"] * 5)
    result = runner.invoke(main, ["info", "memory://info", "orders", "--json"])
    assert result.exit_code == 0, result.output
    [stream] = json.loads(result.stdout)
    assert stream["stream"] == "orders"
    assert stream["length"] == 5
    result = runner.invoke(main, ["dlq", "list", "memory://info", "orders"])
    assert result.exit_code == 0
    assert "no dead letters in orders" in result.stdout


def test_info_on_a_stream_that_does_not_exist_is_an_error(runner: CliRunner) -> None:
    _publish_in_process("exists", "orders", [b"x"])
    result = runner.invoke(main, ["info", "memory://exists", "orders", "nosuchstream"])
    assert result.exit_code == EXIT["failed"]
    assert result.stderr.splitlines() == [
        "pulses: error: no stream 'nosuchstream' at memory://exists "
        "(no entries, consumer groups or dead letters)"
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["info", "orders"],
        ["dlq", "list", "orders"],
        ["dlq", "list", "--limit", "5", "orders"],
        ["trim", "--dry-run", "orders"],
    ],
)
def test_with_pulses_url_set_the_first_argument_is_the_stream(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    _publish_in_process("env", "orders", [b"x"])
    monkeypatch.setenv("PULSES_URL", "memory://env")
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output


def test_pulses_url_wins_over_redis_url_which_is_the_last_fallback(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish_in_process("fallback", "orders", [b"x"])
    monkeypatch.setenv("REDIS_URL", "memory://fallback")
    assert runner.invoke(main, ["info", "orders"]).exit_code == 0
    monkeypatch.setenv("PULSES_URL", "memory://empty")
    result = runner.invoke(main, ["info", "orders"])
    assert result.exit_code == EXIT["failed"]
    assert "no stream 'orders' at memory://empty" in result.stderr


def test_a_url_first_and_as_url_is_refused_and_none_at_all_is_named(runner: CliRunner) -> None:
    result = runner.invoke(main, ["info", "memory://a", "--url", "memory://b"])
    assert result.exit_code == EXIT["usage"]
    assert "the broker URL is given twice" in result.stderr
    result = runner.invoke(main, ["dlq", "list", "orders"])
    assert result.exit_code == EXIT["usage"]
    assert "no broker URL" in result.stderr
    assert "PULSES_URL" in result.stderr


def test_usage_shows_the_url_before_the_stream(runner: CliRunner) -> None:
    result = runner.invoke(main, ["dlq", "replay", "--help"], prog_name="pulses")
    assert "Usage: pulses dlq replay [OPTIONS] [URL] STREAM [ID]..." in result.stdout
    assert "PULSES_ALL" in result.stdout


def test_purge_needs_names_or_all(runner: CliRunner) -> None:
    result = runner.invoke(main, ["dlq", "purge", "memory://x", "s", "--yes"])
    assert result.exit_code == EXIT["usage"]
    assert "or pass --all" in result.stderr


def test_flags_come_from_their_environment_variables(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish_in_process("flags", "orders", [b"x"])
    monkeypatch.setenv("PULSES_JSON", "1")
    result = runner.invoke(main, ["info", "memory://flags", "orders"])
    assert json.loads(result.stdout)[0]["length"] == 1
    monkeypatch.setenv("PULSES_ALL", "1")
    monkeypatch.setenv("PULSES_YES", "1")  # no question asked: stdin is empty
    result = runner.invoke(main, ["dlq", "purge", "memory://flags", "orders"])
    assert result.exit_code == 0, result.output
    assert "purged 0 dead letters of orders" in result.stdout
