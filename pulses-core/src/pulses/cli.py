"""The ``pulses`` command: run workers, publish, inspect streams, manage dead letters.

Flags beat ``PULSES_*`` environment variables, which beat the app's code; ``PULSES_URL``
falls back to ``REDIS_URL``. Each kind of failure has its own exit code (see ``EXIT``),
and prints one line on stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, NoReturn, TypeVar

import click

import pulses
from pulses._broker import Broker, DeadLetterRecord, StreamAdmin, StreamStats
from pulses._errors import BrokerError, ConfigurationError, PulsesError
from pulses._loader import AppImportError, NotAnApp, load_app
from pulses._supervisor import supervise
from pulses._urls import redact_url
from pulses._worker import check, serve

__all__ = ["EXIT", "main"]

EXIT = {
    "ok": 0,
    "failed": 1,  # --check found a problem; a command did not complete
    "usage": 2,  # click's own code for bad arguments
    "import": 3,  # the app's module does not import
    "not_an_app": 4,  # the attribute is missing or not an App
    "config": 5,  # invalid URL, unknown scheme, invalid handler or setting
    "broker": 6,  # the broker is unreachable or refused an operation
    "forced": 130,  # a second signal stopped the worker
}

T = TypeVar("T")
URL_ENV = ["PULSES_URL", "REDIS_URL"]


def _fail(kind: str, message: str, exc: BaseException | None = None) -> NoReturn:
    click.echo(f"pulses: error: {message}", err=True)
    if exc is not None and logging.getLogger("pulses").isEnabledFor(logging.DEBUG):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    sys.exit(EXIT[kind])


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning our errors into one line and a distinct exit code."""
    try:
        return asyncio.run(coro)
    except AppImportError as exc:
        _fail("import", str(exc), exc)
    except NotAnApp as exc:
        _fail("not_an_app", str(exc), exc)
    except ConfigurationError as exc:
        _fail("config", str(exc), exc)
    except (BrokerError, OSError) as exc:
        _fail("broker", f"{type(exc).__name__}: {exc}", exc)
    except PulsesError as exc:
        _fail("failed", str(exc), exc)


def _setup_logging(level: str, verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,  # the command owns the process's logging
    )


def _color() -> bool | None:
    """None lets click decide (colour on a TTY only); NO_COLOR turns it off."""
    return False if os.environ.get("NO_COLOR") else None


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="pulses-core", prog_name="pulses")
def main() -> None:
    """Pulses: background jobs and stream consumers with explicit outcomes."""


# -- worker --------------------------------------------------------------------------


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "--url", envvar=URL_ENV, show_envvar=True, help="Broker URL to use instead of the app's own."
)
@click.option(
    "-w",
    "--workers",
    "processes",
    type=click.IntRange(min=1),
    default=1,
    envvar="PULSES_WORKERS",
    show_envvar=True,
    show_default=True,
    help="Worker processes, each its own consumer.",
)
@click.option(
    "--burst",
    is_flag=True,
    envvar="PULSES_BURST",
    show_envvar=True,
    help="Stop, exit 0, once the app's streams are drained.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    envvar="PULSES_CHECK",
    show_envvar=True,
    help="Exit 0 if the broker and the app's groups are reachable, else 1.",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=None,
    envvar="PULSES_SHUTDOWN_TIMEOUT",
    show_envvar=True,
    help="Seconds running handlers get to finish after the first signal [default: the app's, 25].",
)
@click.option(
    "-l",
    "--log-level",
    default="info",
    envvar="PULSES_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    show_default=True,
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    envvar="PULSES_VERBOSE",
    show_envvar=True,
    help="Debug logging and tracebacks.",
)
def worker(
    app_spec: str,
    url: str | None,
    processes: int,
    burst: bool,
    check_only: bool,
    shutdown_timeout: float | None,
    log_level: str,
    verbose: bool,
) -> None:
    """Run the App at MODULE:APP until SIGTERM or SIGINT.

    The first signal drains: fetching stops, unstarted messages go back to the group,
    running handlers get --shutdown-timeout seconds. A second signal stops at once;
    unfinished messages stay pending and are taken over elsewhere.
    """
    _setup_logging(log_level, verbose)
    if processes > 1 and not check_only:
        app = _run(_prepared(app_spec, url, shutdown_timeout))
        local = app.broker.capabilities.process_local
        _run(app.broker.aclose())
        if local:
            _fail(
                "config",
                f"the broker {app.broker.url} lives inside one process, so "
                f"--workers {processes} cannot share its work; use one process or a "
                "broker such as redis://",
            )
        child = ["worker", app_spec, "--log-level", log_level]
        if url is not None:  # by environment, not argv: a password in argv shows in ps
            os.environ["PULSES_URL"] = url
        if shutdown_timeout is not None:
            child += ["--shutdown-timeout", str(shutdown_timeout)]
        child += ["--burst"] if burst else []
        child += ["--verbose"] if verbose else []
        os.environ.pop("PULSES_WORKERS", None)  # each child is one process
        sys.exit(supervise(child, processes))

    async def go() -> int:
        app = await _prepared(app_spec, url, shutdown_timeout)
        if check_only:
            problems = await check(app)
            for problem in problems:
                click.echo(f"pulses: check: {problem}", err=True)
            if not problems:
                click.echo(f"ok: {app.broker.url}, group {app.subscription.group!r}")
            return EXIT["failed"] if problems else EXIT["ok"]
        return await serve(app, burst=burst)

    sys.exit(_run(go()))


async def _prepared(app_spec: str, url: str | None, shutdown_timeout: float | None) -> Any:
    app = load_app(app_spec)
    if url is not None or shutdown_timeout is not None:
        broker = await pulses.connect(url) if url is not None else app.broker
        app = app.using(broker, shutdown_timeout=shutdown_timeout)
    return app


# -- publish -------------------------------------------------------------------------


def _header(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx, param)
        headers[key] = val
    return headers


@main.command()
@click.argument("url", envvar=URL_ENV)
@click.argument("stream")
@click.argument("payload", default="-")
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    callback=_header,
    envvar="PULSES_HEADERS",
    metavar="KEY=VALUE",
    help="A header; repeatable.",
)
@click.option(
    "--delay-ms",
    type=click.IntRange(min=0),
    default=0,
    envvar="PULSES_DELAY_MS",
    show_envvar=True,
    help="Deliver no sooner than this.",
)
@click.option(
    "-n",
    "--count",
    type=click.IntRange(min=1),
    default=1,
    envvar="PULSES_COUNT",
    show_envvar=True,
    help="Publish the payload this many times (a quick load test).",
)
def publish(
    url: str, stream: str, payload: str, headers: dict[str, str], delay_ms: int, count: int
) -> None:
    """Publish PAYLOAD to STREAM; with '-' (the default), each line of stdin."""

    async def go(broker: Broker[Any]) -> int:
        if payload == "-":
            lines = [line.rstrip("\n").encode() for line in sys.stdin]
            payloads = [p for p in lines for _ in range(count)]
        else:
            payloads = [payload.encode()] * count
        started = time.perf_counter()
        ids: list[str] = []
        if delay_ms:  # publish_many has no delay: each delayed message is its own call
            ids = [
                await broker.publish(stream, body, headers=headers or None, delay_ms=delay_ms)
                for body in payloads
            ]
        else:
            for i in range(0, len(payloads), 1000):
                ids += await broker.publish_many(
                    stream, payloads[i : i + 1000], headers=headers or None
                )
        elapsed = time.perf_counter() - started
        rate = f", {len(ids) / elapsed:,.0f}/s" if len(ids) > 1 and elapsed > 0 else ""
        last = f", last id {ids[-1]}" if ids else ""
        click.echo(f"published {len(ids)} to {stream}{last}{rate}")
        return 0

    sys.exit(_run(_with_broker(url, go)))


async def _with_broker(url: str, use: Callable[[Broker[Any]], Awaitable[T]]) -> T:
    async with await pulses.connect(url) as broker:
        return await use(broker)


async def _with_admin(url: str, use: Callable[[StreamAdmin], Awaitable[T]]) -> T:
    async def go(broker: Broker[Any]) -> T:
        if not broker.capabilities.admin or not isinstance(broker, StreamAdmin):
            raise ConfigurationError(f"the broker at {broker.url} has no admin facet")
        return await use(broker)

    return await _with_broker(url, go)


# -- info ----------------------------------------------------------------------------


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _render(stats: StreamStats) -> str:
    lines = [
        click.style(f"stream {stats.stream}", bold=True)
        + f"  length {stats.length}  delayed {stats.delayed}  dead letters {stats.dead_letters}"
    ]
    for g in stats.groups:
        lines.append(
            f"  group {g.group}  pending {g.pending}  lag {g.lag}  delayed retries {g.delayed}"
            f"  oldest pending {_age(g.oldest_pending_ms)}"
            f"  (acked {g.acked}, dropped {g.dropped}, dead-lettered {g.dead_lettered})"
        )
        lines += [
            f"    consumer {c.name}  pending {c.pending}  idle {_age(c.idle_ms)}"
            for c in g.consumers
        ]
    if not stats.groups:
        lines.append("  no consumer groups")
    return "\n".join(lines)


@main.command()
@click.argument("url", envvar=URL_ENV)
@click.argument("streams", nargs=-1)
@click.option(
    "--json", "as_json", is_flag=True, envvar="PULSES_JSON", help="One JSON document on stdout."
)
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    default=None,
    envvar="PULSES_WATCH",
    metavar="SECONDS",
    help="Refresh every SECONDS until Ctrl+C.",
)
def info(url: str, streams: tuple[str, ...], as_json: bool, watch: float | None) -> None:
    """Streams and groups: length, pending, lag, consumers, oldest pending, dead letters."""

    async def once(admin: StreamAdmin) -> list[StreamStats]:
        names = list(streams) or await admin.streams()
        return [await admin.stats(name) for name in names]

    async def go(admin: StreamAdmin) -> int:
        while True:
            found = await once(admin)
            if as_json:
                click.echo(json.dumps([dataclasses.asdict(s) for s in found], indent=2))
            else:
                if watch is not None and sys.stdout.isatty():
                    click.clear()
                text = "\n".join(_render(s) for s in found) or "no streams"
                click.echo(text, color=_color())
            if watch is None:
                return 0
            await asyncio.sleep(watch)

    try:
        sys.exit(_run(_with_admin(url, go)))
    except KeyboardInterrupt:
        sys.exit(0)


# -- dead letters --------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """List, show, replay and purge dead letters of a stream."""


def _reason(record: DeadLetterRecord, width: int = 60) -> str:
    reason = record.reason.replace("\n", " ")
    return reason if len(reason) <= width else reason[: width - 1] + "…"


@dlq.command("list")
@click.argument("url", envvar=URL_ENV)
@click.argument("stream")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    envvar="PULSES_LIMIT",
    show_envvar=True,
)
@click.option("--json", "as_json", is_flag=True, envvar="PULSES_JSON", show_envvar=True)
def dlq_list(url: str, stream: str, limit: int, as_json: bool) -> None:
    """Dead letters of STREAM, oldest first, with reasons and delivery counts."""

    async def go(admin: StreamAdmin) -> int:
        records = await admin.dead_letters(stream, limit=limit)
        if as_json:
            click.echo(json.dumps([_record_json(r) for r in records], indent=2))
            return 0
        if not records:
            click.echo(f"no dead letters in {stream}")
        for r in records:
            click.echo(
                f"{r.id}  from {r.original_id}  deliveries {r.deliveries}  "
                f"{r.handler}/{r.group}  {_reason(r)}"
            )
        return 0

    sys.exit(_run(_with_admin(url, go)))


def _record_json(record: DeadLetterRecord) -> dict[str, object]:
    data = dataclasses.asdict(record)
    payload = record.payload
    try:
        data["payload"] = payload.decode()
    except UnicodeDecodeError:
        data["payload"] = None
        data["payload_hex"] = payload.hex()
    data["headers"] = dict(record.headers)
    return data


@dlq.command("show")
@click.argument("url", envvar=URL_ENV)
@click.argument("stream")
@click.argument("dead_id", metavar="ID")
def dlq_show(url: str, stream: str, dead_id: str) -> None:
    """One dead letter in full."""

    async def go(admin: StreamAdmin) -> int:
        for record in await admin.dead_letters(stream, limit=1_000_000):
            if record.id == dead_id:
                click.echo(json.dumps(_record_json(record), indent=2))
                return 0
        _fail("failed", f"no dead letter {dead_id!r} in {stream}")

    sys.exit(_run(_with_admin(url, go)))


def _chosen(ids: tuple[str, ...], everything: bool, verb: str) -> list[str] | None:
    if bool(ids) == everything:
        raise click.UsageError(f"name the dead letters to {verb}, or pass --all")
    return list(ids) if ids else None


@dlq.command("replay")
@click.argument("url", envvar=URL_ENV)
@click.argument("stream")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option(
    "--all", "everything", is_flag=True, envvar="PULSES_ALL", help="Replay every dead letter."
)
def dlq_replay(url: str, stream: str, ids: tuple[str, ...], everything: bool) -> None:
    """Publish dead letters into STREAM again, as new deliveries, and remove them."""
    chosen = _chosen(ids, everything, "replay")

    async def go(admin: StreamAdmin) -> int:
        todo = (
            chosen
            if chosen is not None
            else [r.id for r in await admin.dead_letters(stream, limit=10_000_000)]
        )
        replayed = 0
        with click.progressbar(
            length=len(todo), label=f"replaying into {stream}", file=sys.stderr
        ) as bar:
            for i in range(0, len(todo), 500):
                chunk = todo[i : i + 500]
                replayed += len(await admin.replay(stream, chunk))
                bar.update(len(chunk))
        click.echo(f"replayed {replayed} dead letters into {stream}")
        return 0

    sys.exit(_run(_with_admin(url, go)))


@dlq.command("purge")
@click.argument("url", envvar=URL_ENV)
@click.argument("stream")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option(
    "--all", "everything", is_flag=True, envvar="PULSES_ALL", help="Purge every dead letter."
)
@click.option("--yes", is_flag=True, envvar="PULSES_YES", help="Do not ask for confirmation.")
def dlq_purge(url: str, stream: str, ids: tuple[str, ...], everything: bool, yes: bool) -> None:
    """Delete dead letters of STREAM for good."""
    chosen = _chosen(ids, everything, "purge")
    what = "every dead letter" if chosen is None else f"{len(chosen)} dead letters"
    if not yes:
        click.confirm(f"delete {what} of {stream} ({redact_url(url)})?", abort=True)

    async def go(admin: StreamAdmin) -> int:
        click.echo(f"purged {await admin.purge(stream, chosen)} dead letters of {stream}")
        return 0

    sys.exit(_run(_with_admin(url, go)))


# -- trim ----------------------------------------------------------------------------


@main.command()
@click.argument("url", envvar=URL_ENV)
@click.argument("stream")
@click.option(
    "--dry-run", is_flag=True, envvar="PULSES_DRY_RUN", help="Count what would go, remove nothing."
)
def trim(url: str, stream: str, dry_run: bool) -> None:
    """Remove entries of STREAM that every consumer group has acknowledged."""

    async def go(admin: StreamAdmin) -> int:
        count = await admin.trim(stream, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        click.echo(f"{verb} {count} acknowledged entries of {stream}")
        return 0

    sys.exit(_run(_with_admin(url, go)))
