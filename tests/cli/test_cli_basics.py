"""Argument handling, errors and exit codes of the pulses command (click's runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pulses.cli import EXIT, main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_help_lists_every_command(runner: CliRunner) -> None:
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("worker", "publish", "info", "dlq", "trim"):
        assert command in result.output


@pytest.mark.parametrize(
    ("spec", "code", "words"),
    [
        ("broken:app", "import", "cannot import module 'broken': ModuleNotFoundError"),
        ("missing_module:app", "import", "cannot import module 'missing_module'"),
        ("jobs:nothing", "not_an_app", "has no attribute 'nothing'"),
        ("jobs:not_an_app", "not_an_app", "is a int, not a pulses.App"),
        ("jobs", "not_an_app", "does not name an app"),
    ],
)
def test_a_bad_app_spec_is_one_clear_line_and_its_own_exit_code(
    runner: CliRunner, app_dir: Path, spec: str, code: str, words: str
) -> None:
    result = runner.invoke(main, ["worker", spec])
    assert result.exit_code == EXIT[code]
    assert words in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_scheme_names_the_package_to_install(runner: CliRunner, app_dir: Path) -> None:
    result = runner.invoke(main, ["worker", "jobs:app", "--url", "amqp://u:hunter2@h/"])
    assert result.exit_code == EXIT["config"]
    assert "pip install pulses-amqp" in result.stderr
    assert "hunter2" not in result.stderr


def test_the_url_comes_from_the_environment_when_no_flag_is_given(
    runner: CliRunner, app_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "nats://elsewhere")
    result = runner.invoke(main, ["worker", "jobs:app", "--check"])
    assert result.exit_code == EXIT["config"]
    assert "'nats://'" in result.stderr
    monkeypatch.setenv("PULSES_URL", "kafka://first")  # PULSES_URL wins over REDIS_URL
    result = runner.invoke(main, ["worker", "jobs:app", "--check"])
    assert "'kafka://'" in result.stderr


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


def test_burst_on_empty_streams_exits_0_and_logs_start_and_stop(
    runner: CliRunner, app_dir: Path
) -> None:
    result = runner.invoke(main, ["worker", "jobs:app", "--burst"])
    assert result.exit_code == 0, result.output
    assert "pulses starting on memory://cli-tests" in result.stderr
    assert "Record[jobs]x2" in result.stderr
    assert "pulses stopped: handled 0" in result.stderr


def test_publish_reads_stdin_line_by_line(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["publish", "memory://pub", "s", "-", "-H", "a=b"], input="one\ntwo\nthree\n"
    )
    assert result.exit_code == 0, result.output
    assert "published 3 to s" in result.stdout


def test_publish_rejects_a_header_without_a_value(runner: CliRunner) -> None:
    result = runner.invoke(main, ["publish", "memory://pub", "s", "x", "-H", "novalue"])
    assert result.exit_code == EXIT["usage"]
    assert "is not KEY=VALUE" in result.stderr


def test_info_json_and_dlq_on_the_memory_broker(runner: CliRunner) -> None:
    # Each command connects anew; a named memory broker keeps its data in the process.
    assert (
        runner.invoke(main, ["publish", "memory://info", "orders", "x", "-n", "5"]).exit_code == 0
    )
    result = runner.invoke(main, ["info", "memory://info", "orders", "--json"])
    assert result.exit_code == 0, result.output
    [stream] = json.loads(result.stdout)
    assert stream["stream"] == "orders"
    assert stream["length"] == 5
    result = runner.invoke(main, ["dlq", "list", "memory://info", "orders"])
    assert result.exit_code == 0
    assert "no dead letters in orders" in result.stdout


def test_purge_needs_names_or_all(runner: CliRunner) -> None:
    result = runner.invoke(main, ["dlq", "purge", "memory://x", "s", "--yes"])
    assert result.exit_code == EXIT["usage"]
    assert "or pass --all" in result.stderr
