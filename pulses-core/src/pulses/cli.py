"""The ``pulses`` command: run workers, publish, inspect streams, manage dead letters.

Flags beat ``PULSES_*`` environment variables (every flag has one), which beat the app's
code. The broker's URL: ``pulses worker`` takes ``--url`` or ``PULSES_URL`` over the
broker the app builds, and never ``REDIS_URL`` (a hosting platform sets that for
whatever Redis is attached); the other commands take the URL first, ``--url``,
``PULSES_URL`` or, last, ``REDIS_URL``. Each kind of failure has its own exit code (see
``EXIT``) and prints one line on stderr; ``-v`` adds the traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import pkgutil
import re
import shutil
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from click.core import ParameterSource

import pulses
from pulses._app import App
from pulses._broker import Broker, DeadLetterRecord, StreamAdmin, StreamStats, TrimStats
from pulses._errors import BrokerError, ConfigurationError, PulsesError
from pulses._logging import LOG_FORMATS, configure_logging, logs_json
from pulses._middleware import Middleware
from pulses._plugins import ENTRY_POINT_GROUP
from pulses._supervisor import METRICS_DIR_ENV, supervise
from pulses._urls import redact_url
from pulses._worker import BURST_GRACE, check, serve

__all__ = ["EXIT", "main"]

EXIT = {
    "ok": 0,
    "failed": 1,  # --check found a problem; a command did not complete or found nothing
    "usage": 2,  # click's own code for bad arguments
    "import": 3,  # the app's module does not import
    "not_an_app": 4,  # the attribute is missing or not an App
    "config": 5,  # invalid URL, unknown scheme, invalid handler or setting
    "broker": 6,  # the broker is unreachable or refused an operation
    "forced": 130,  # a second signal stopped the worker
}

T = TypeVar("T")
logger = logging.getLogger("pulses.worker")


class Failed(click.ClickException):
    """A command did not complete: one line on stderr (``-v`` adds the traceback of its
    cause) and the exit code of its kind; click exits with it."""

    exit_code = EXIT["failed"]

    def show(self, file: IO[Any] | None = None) -> None:
        verbose = logging.getLogger("pulses").isEnabledFor(logging.DEBUG)
        if file is None and logs_json():  # every line on stderr one JSON object
            cause = self.__cause__ if verbose else None
            logger.error("pulses: error: %s", self.format_message(), exc_info=cause)
            return
        click.echo(f"pulses: error: {self.format_message()}", file=file, err=file is None)
        if self.__cause__ is not None and verbose:
            traceback.print_exception(self.__cause__, file=file or sys.stderr)


class ImportFailed(Failed):
    exit_code = EXIT["import"]


class NotAnApp(Failed):
    exit_code = EXIT["not_an_app"]


class BadConfiguration(Failed):
    exit_code = EXIT["config"]


class BrokerFailed(Failed):
    exit_code = EXIT["broker"]


def _failure(exc: PulsesError | OSError) -> Failed:
    if isinstance(exc, ConfigurationError):
        return BadConfiguration(str(exc))
    if isinstance(exc, BrokerError | OSError):
        return BrokerFailed(f"{type(exc).__name__}: {exc}")
    return Failed(str(exc))


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except (PulsesError, OSError) as exc:
        raise _failure(exc) from exc


def _color() -> bool | None:
    """None lets click decide (colour on a TTY only); NO_COLOR turns it off."""
    return False if os.environ.get("NO_COLOR") else None


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _print_versions(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    versions = {"pulses-core": metadata.version("pulses-core")}
    for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.dist is not None:
            versions[entry_point.dist.name] = entry_point.dist.version
    click.echo("\n".join(f"{name} {version}" for name, version in sorted(versions.items())))
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_versions,
    help="Show the versions of pulses-core and the installed broker packages, and exit.",
)
def main() -> None:
    """Pulses: background jobs and stream consumers with explicit outcomes."""


# -- worker --------------------------------------------------------------------------


def _load_app(spec: str) -> App[Any]:
    """The App that ``module:app`` names, with the current directory importable."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = spec.partition(":")[0] if ":" in spec else spec.partition(".")[0]
    try:
        found = pkgutil.resolve_name(spec)
    except PulsesError as exc:  # a wrong setting in the app's code: not an import problem
        raise _failure(exc) from exc
    except ValueError as exc:
        raise NotAnApp(f"{spec!r} does not name an app; write it as 'module:app'") from exc
    except AttributeError as exc:
        if module in sys.modules:  # imported; only the attribute is missing
            raise NotAnApp(f"{spec}: {exc}") from exc
        raise ImportFailed(f"cannot import module {module!r}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise ImportFailed(f"cannot import module {module!r}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(found, App):
        raise NotAnApp(
            f"{spec} is a {type(found).__name__}, not a pulses.App; point at the App, e.g. "
            "'module:app' for app = App(broker, broker.subscription('group')).register(...)",
        )
    return found


def _log_broker(app: App[Any], url: str | None, source: ParameterSource | None) -> None:
    if url is not None:
        origin = "--url" if source is ParameterSource.COMMANDLINE else "PULSES_URL"
        logger.info(
            "broker %s, from %s (instead of the app's own, %s)",
            redact_url(url),
            origin,
            redact_url(app.broker.url),
        )
        return
    ignored = (
        "; REDIS_URL is set but never overrides a broker the code configures (use PULSES_URL)"
        if os.environ.get("REDIS_URL")
        else ""
    )
    logger.info(
        "broker %s, the app's own: no --url or PULSES_URL%s", redact_url(app.broker.url), ignored
    )


async def _prepared(
    app: App[Any],
    url: str | None,
    shutdown_timeout: float | None,
    middleware: Sequence[Middleware] = (),
    retention: str | None = None,
) -> App[Any]:
    if url is None and shutdown_timeout is None and not middleware and retention is None:
        return app
    broker = await pulses.connect(url) if url is not None else app.broker
    return app.using(
        broker,
        shutdown_timeout=shutdown_timeout,
        middleware=middleware,
        retention=... if retention is None else _retention(retention),
    )


_AGE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _retention(spec: str, option: str = "--retention") -> pulses.Retention | None:
    """``--retention``: ``off``, a count of entries (``1000``), or an age (``24h``)."""
    text = spec.strip().lower()
    if text == "off":
        return None
    if text.isdigit():
        return pulses.Retention(keep=int(text))
    age = _AGE.fullmatch(text)
    if age is None:
        raise click.BadParameter(
            f"{spec!r} is neither off, a count of entries (1000) nor an age (90s, 30m, 24h, 7d)",
            param_hint=f"'{option}'",
        )
    return pulses.Retention(keep_ms=round(float(age[1]) * _MS[age[2]]))


def _require_prometheus() -> None:
    try:
        import prometheus_client  # noqa: F401  (only whether it is installed)
    except ImportError as exc:
        raise BadConfiguration(
            "--metrics-port needs prometheus-client: pip install 'pulses-core[prometheus]'"
        ) from exc


def _metrics_failed(port: int, exc: OSError) -> Failed:
    return Failed(f"cannot serve metrics on port {port}: {exc.strerror or exc}")


async def _serve_with_metrics(app: App[Any], port: int, burst: bool) -> int:
    """``serve`` with ``/metrics`` on ``port``; under a ``-w`` supervisor, on a loopback
    port that the supervisor reads (``_metrics_group``)."""
    from prometheus_client import CollectorRegistry  # the optional extra: imported late

    from pulses._metrics_group import serve_child, start_server
    from pulses.prometheus import Metrics

    metrics = Metrics()
    prepared = app.using(app.broker, middleware=[metrics])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.collector(prepared))
    directory = os.environ.get(METRICS_DIR_ENV)
    try:
        if directory:
            server = serve_child(registry, Path(directory))
        else:
            server = start_server(registry, port)
            logger.info("metrics at http://0.0.0.0:%d/metrics", server.server_port)
    except OSError as exc:
        await prepared.broker.aclose()
        raise _metrics_failed(port, exc) from exc
    try:
        return await serve(prepared, burst=burst)
    finally:
        server.shutdown()
        server.server_close()


@main.command()
@click.argument("app_spec", metavar="MODULE:APP")
@click.option(
    "--url",
    envvar="PULSES_URL",
    show_envvar=True,
    metavar="URL",
    help="Run the app on this broker instead of the one its code builds (REDIS_URL never does).",
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
    help=(
        "Handle what the app's streams hold, then exit 0. Delayed messages (delayed "
        "publishes, retries) are waited for while they come due; once only ones not due "
        f"within {BURST_GRACE:g}s are left, they stay for a later run and are logged."
    ),
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    envvar="PULSES_CHECK",
    show_envvar=True,
    help=(
        "Exit 0 if the broker answers and the app's streams can be read, else 1. Read-only "
        "(it creates no group or stream): fit for a readiness or liveness probe."
    ),
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
    "--retention",
    default=None,
    envvar="PULSES_RETENTION",
    show_envvar=True,
    metavar="off|COUNT|AGE",
    help=(
        "History left when trimming what every group acknowledged from the app's streams: "
        "a count of entries (1000) or an age (24h); off: no trimming "
        "[default: the app's, 1000]."
    ),
)
@click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    envvar="PULSES_METRICS_PORT",
    show_envvar=True,
    metavar="PORT",
    help=(
        "Serve Prometheus metrics at http://0.0.0.0:PORT/metrics (needs pulses-core"
        "[prometheus]); with --workers, one endpoint for all the processes."
    ),
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
    "--log-format",
    default="text",
    envvar="PULSES_LOG_FORMAT",
    show_envvar=True,
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    show_default=True,
    help="json: one JSON object per line (ts, level, logger, message, pid, and fields "
    "such as handler, stream, message_id, deliveries, reason, exception).",
)
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    envvar="PULSES_VERBOSE",
    show_envvar=True,
    help="Debug logging and tracebacks.",
)
@click.pass_context
def worker(
    ctx: click.Context,
    app_spec: str,
    url: str | None,
    processes: int,
    burst: bool,
    check_only: bool,
    shutdown_timeout: float | None,
    retention: str | None,
    metrics_port: int | None,
    log_level: str,
    log_format: str,
    verbose: bool,
) -> None:
    """Run the App at MODULE:APP until SIGTERM or SIGINT.

    The first signal drains: fetching stops, unstarted messages go back to the group,
    running handlers get --shutdown-timeout seconds. A second signal stops at once;
    unfinished messages stay pending and are taken over elsewhere.
    """
    configure_logging(
        logging.DEBUG if verbose else getattr(logging, log_level.upper()), log_format.lower()
    )
    if metrics_port is not None and not check_only:
        _require_prometheus()
    app = _load_app(app_spec)
    _log_broker(app, url, ctx.get_parameter_source("url"))
    if processes > 1 and not check_only:
        prepared = _run(_prepared(app, url, shutdown_timeout, retention=retention))
        local = prepared.broker.capabilities.process_local
        _run(prepared.broker.aclose())
        if local:
            raise BadConfiguration(
                f"the broker {prepared.broker.url} lives inside one process, so --workers "
                f"{processes} cannot share its work; use one process or a broker such as "
                "redis://",
            )
        child = ["worker", app_spec, "--log-level", log_level, "--log-format", log_format]
        if url is not None:  # by environment, not argv: a password in argv shows in ps
            os.environ["PULSES_URL"] = url
        if shutdown_timeout is not None:
            child += ["--shutdown-timeout", str(shutdown_timeout)]
        if retention is not None:
            child += ["--retention", retention]
        child += ["--burst"] if burst else []
        child += ["--verbose"] if verbose else []
        os.environ.pop("PULSES_WORKERS", None)  # each child is one process
        if metrics_port is None:
            ctx.exit(supervise(child, processes))
        # One endpoint for the group: the children serve on loopback ports, summed here.
        os.environ.pop("PULSES_METRICS_PORT", None)
        from pulses._metrics_group import serve_group  # imports the optional extra

        try:
            server, directory = serve_group(metrics_port)
        except OSError as exc:
            raise _metrics_failed(metrics_port, exc) from exc
        logger.info(
            "metrics of the %d processes at http://0.0.0.0:%d/metrics", processes, metrics_port
        )
        try:
            code = supervise([*child, "--metrics-port", "0"], processes, directory)
        finally:
            server.shutdown()
            server.server_close()
            shutil.rmtree(directory, ignore_errors=True)
        ctx.exit(code)

    async def go() -> int:  # connects in the loop that serves: a client is bound to its loop
        prepared = await _prepared(app, url, shutdown_timeout, retention=retention)
        if check_only:
            found = await check(prepared)
            for problem in found.problems:
                if logs_json():
                    logger.error("pulses: check: %s", problem)
                else:
                    click.echo(f"pulses: check: {problem}", err=True)
            if found.problems:
                return EXIT["failed"]
            line = f"ok: {prepared.broker.url}, group {prepared.subscription.group!r}"
            if not found.read:
                line += "; the broker has no admin facet to ask: not contacted"
            if found.groups_missing:
                line += f"; the group is not created yet on {', '.join(found.groups_missing)}"
            click.echo(line)
            return EXIT["ok"]
        if metrics_port is not None:
            return await _serve_with_metrics(prepared, metrics_port, burst)
        return await serve(prepared, burst=burst)

    ctx.exit(_run(go()))


# -- commands on a broker named by URL -----------------------------------------------

_URL_FIRST = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")
"""A first argument that starts so is the URL (``redis:/x`` too, to be told what is wrong
with it); anything else is the stream."""


class _BrokerCommand(click.Command):
    """A command on the broker at ``--url``, ``PULSES_URL``, ``REDIS_URL``, or a URL given
    as the first argument: ``pulses info redis://host/0 emails``, and with ``PULSES_URL``
    set, ``pulses info emails``."""

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)
        return [*pieces[:1], "[URL]", *pieces[1:]]

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = self._leading_url(args)
        if first is not None:
            args = list(args)
            # The first occurrence: anything before it is an option, and an option whose
            # value equals it is --url, which is refused below either way.
            args.remove(first)
        rest = super().parse_args(ctx, args)
        if first is not None:
            if ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE:
                raise click.UsageError("the broker URL is given twice: first and as --url", ctx)
            ctx.params["url"] = first
        if ctx.params.get("url") is None:
            raise click.UsageError(
                f"no broker URL: give it first ({ctx.command_path} redis://host:6379/0 ...), "
                "as --url, or in PULSES_URL",
                ctx,
            )
        return rest

    def _leading_url(self, args: Sequence[str]) -> str | None:
        """The first positional argument if it is a URL, as click's parser finds it: a
        parse with only the options and one argument that takes every positional."""
        probe = click.Command(
            None,
            params=[
                *(p for p in self.params if isinstance(p, click.Option)),
                click.Argument(["positionals"], nargs=-1),
            ],
        )
        try:
            with probe.make_context("probe", list(args), resilient_parsing=True) as probed:
                positionals: tuple[str, ...] = probed.params["positionals"]
        except click.ClickException:
            return None  # the real parse reports it
        if positionals and _URL_FIRST.match(positionals[0]):
            return positionals[0]
        return None


def _broker_command(group: click.Group, name: str | None = None) -> Callable[[Any], Any]:
    """``group.command`` for a command on a broker, with its ``--url`` option."""

    def decorate(f: Callable[..., None]) -> click.Command:
        f = click.option(
            "--url",
            envvar=["PULSES_URL", "REDIS_URL"],
            show_envvar=True,
            metavar="URL",
            help="The broker's URL, if not given first; REDIS_URL is the last fallback.",
        )(f)
        return group.command(name, cls=_BrokerCommand)(f)

    return decorate


async def _with_broker(url: str, use: Callable[[Broker[Any]], Awaitable[T]]) -> T:
    async with await pulses.connect(url) as broker:
        return await use(broker)


async def _with_admin(url: str, use: Callable[[StreamAdmin], Awaitable[T]]) -> T:
    async def go(broker: Broker[Any]) -> T:
        if not broker.capabilities.admin or not isinstance(broker, StreamAdmin):
            raise ConfigurationError(f"the broker at {broker.url} has no admin facet")
        return await use(broker)

    return await _with_broker(url, go)


# -- publish -------------------------------------------------------------------------


def _header(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    headers = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", ctx, param)
        headers[key] = val
    return headers


@_broker_command(main)
@click.argument("stream")
@click.argument("payload", required=False)
@click.option(
    "-f",
    "--file",
    "source",
    type=click.File("rb"),
    envvar="PULSES_FILE",
    show_envvar=True,
    help="Publish the whole content of this file (bytes, as they are) as one payload; "
    "'-' for all of stdin.",
)
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    callback=_header,
    envvar="PULSES_HEADERS",
    show_envvar=True,
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
    url: str,
    stream: str,
    payload: str | None,
    source: IO[bytes] | None,
    headers: dict[str, str],
    delay_ms: int,
    count: int,
) -> None:
    """Publish PAYLOAD to STREAM; without one (or with '-'), each line of stdin, as bytes.

    --file publishes a whole file (or with '-', all of stdin) as one payload, byte for
    byte. A broker that lives inside one process (memory://) is refused: what this
    command published would vanish when it exits.
    """
    if payload is not None and source is not None:
        raise click.UsageError("give a PAYLOAD or --file, not both")

    async def go(broker: Broker[Any]) -> None:
        if broker.capabilities.process_local:
            raise ConfigurationError(
                f"the broker {broker.url} lives inside one process: what this command "
                "published would vanish when it exits; publish from the process that runs "
                "the app, or use a broker such as redis://"
            )
        if source is not None:
            bodies = [source.read()]
        elif payload is None or payload == "-":
            bodies = [line.rstrip(b"\n") for line in sys.stdin.buffer]
        else:
            bodies = [payload.encode()]
        payloads = [body for body in bodies for _ in range(count)]
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

    _run(_with_broker(url, go))


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
    lines.append(_trimmed(stats.trimmed))
    for g in stats.groups:
        lines.append(
            f"  group {g.group}  pending {g.pending}  lag {g.lag}  delayed retries {g.delayed}"
            f"  oldest pending {_age(g.oldest_pending_ms)}"
            f"  (acked {g.acked}, dropped {g.dropped}, dead-lettered {g.dead_lettered})"
        )
        lines += [
            f"    consumer {c.name}  pending {c.pending}  idle {_age(c.idle_ms)}"
            + {True: "  alive", False: "  dead (heartbeat lapsed)", None: ""}[c.alive]
            for c in g.consumers
        ]
    if not stats.groups:
        lines.append("  no consumer groups")
    return "\n".join(lines)


def _trimmed(trimmed: TrimStats | None) -> str:
    """What retention (or ``pulses trim``) removed, as the last trim recorded it."""
    if trimmed is None:
        return "  never trimmed"
    if trimmed.keep is not None:
        kept = f"the newest {_count(trimmed.keep, 'entry', 'entries')}"
    elif trimmed.keep_ms is not None:
        kept = f"entries younger than {_age(trimmed.keep_ms)}"
    else:
        kept = "no acknowledged entry"
    return (
        f"  trimmed {trimmed.removed} in total, {trimmed.last_removed} by the last trim "
        f"{_age(trimmed.last_ago_ms)} ago, which kept {kept}"
    )


def _absent(stats: StreamStats) -> bool:
    return not (stats.length or stats.groups or stats.delayed or stats.dead_letters)


@_broker_command(main)
@click.argument("streams", nargs=-1, metavar="[STREAM]...")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="PULSES_JSON",
    show_envvar=True,
    help="One JSON document on stdout.",
)
@click.option(
    "--watch",
    type=click.FloatRange(min=0.1),
    default=None,
    envvar="PULSES_WATCH",
    show_envvar=True,
    metavar="SECONDS",
    help="Refresh every SECONDS until Ctrl+C.",
)
def info(url: str, streams: tuple[str, ...], as_json: bool, watch: float | None) -> None:
    """Streams and groups: length, pending, lag, consumers, oldest pending, dead letters.

    Without STREAM, every stream that has a consumer group or dead letters. A STREAM
    that holds nothing (no entries, groups or dead letters) is an error.
    """

    async def go(admin: StreamAdmin) -> None:
        while True:
            names = list(streams) or await admin.streams()
            found = [await admin.stats(name) for name in names]
            missing = [s.stream for s in found if streams and _absent(s)]
            if missing:
                raise Failed(
                    f"no stream {', '.join(map(repr, missing))} at {redact_url(url)} "
                    "(no entries, consumer groups or dead letters)",
                )
            if as_json:
                click.echo(json.dumps([dataclasses.asdict(s) for s in found], indent=2))
            else:
                if watch is not None:
                    if sys.stdout.isatty():
                        click.clear()
                    click.echo(
                        click.style(
                            f"{redact_url(url)}  every {watch:g}s  "
                            f"{time.strftime('%Y-%m-%d %H:%M:%S')}  (Ctrl+C to stop)",
                            dim=True,
                        )
                        + "\n",
                        color=_color(),
                    )
                text = "\n".join(_render(s) for s in found) or "no streams"
                click.echo(text, color=_color())
            if watch is None:
                return
            await asyncio.sleep(watch)

    with contextlib.suppress(KeyboardInterrupt):  # the way out of --watch
        _run(_with_admin(url, go))


# -- dead letters --------------------------------------------------------------------


@main.group()
def dlq() -> None:
    """List, show, replay and purge dead letters of a stream."""


def _reason(record: DeadLetterRecord, width: int = 60) -> str:
    reason = record.reason.replace("\n", " ")
    return reason if len(reason) <= width else reason[: width - 1] + "…"


@_broker_command(dlq, "list")
@click.argument("stream")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    envvar="PULSES_LIMIT",
    show_envvar=True,
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    envvar="PULSES_JSON",
    show_envvar=True,
    help="One JSON document on stdout.",
)
def dlq_list(url: str, stream: str, limit: int, as_json: bool) -> None:
    """Dead letters of STREAM, oldest first, with reasons and delivery counts."""

    async def go(admin: StreamAdmin) -> None:
        records = await admin.dead_letters(stream, limit=limit)
        if as_json:
            click.echo(json.dumps([_record_json(r) for r in records], indent=2))
            return
        if not records:
            click.echo(f"no dead letters in {stream}")
        for r in records:
            click.echo(
                f"{r.id}  from {r.original_id}  deliveries {r.deliveries}  "
                f"{r.handler}/{r.group}  {_reason(r)}"
            )

    _run(_with_admin(url, go))


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


@_broker_command(dlq, "show")
@click.argument("stream")
@click.argument("dead_id", metavar="ID")
def dlq_show(url: str, stream: str, dead_id: str) -> None:
    """A dead letter in full, by its own ID or by the message id a handler logged (every
    dead letter of that message, oldest first, when it died more than once)."""

    async def go(admin: StreamAdmin) -> None:
        found = False
        for record in await admin.dead_letters(stream, limit=1_000_000):
            if dead_id in (record.id, record.message_id):
                click.echo(json.dumps(_record_json(record), indent=2))
                found = True
        if not found:
            raise Failed(f"no dead letter {dead_id!r} in {stream} (by dead-letter or message id)")

    _run(_with_admin(url, go))


def _chosen(ids: tuple[str, ...], everything: bool, verb: str) -> list[str] | None:
    if bool(ids) == everything:
        raise click.UsageError(f"name the dead letters to {verb}, or pass --all")
    return list(ids) if ids else None


@_broker_command(dlq, "replay")
@click.argument("stream")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    envvar="PULSES_ALL",
    show_envvar=True,
    help="Replay every dead letter.",
)
def dlq_replay(url: str, stream: str, ids: tuple[str, ...], everything: bool) -> None:
    """Publish dead letters into STREAM again, as new deliveries, and remove them."""
    chosen = _chosen(ids, everything, "replay")

    async def go(admin: StreamAdmin) -> None:
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
        click.echo(f"replayed {_count(replayed, 'dead letter')} into {stream}")

    _run(_with_admin(url, go))


@_broker_command(dlq, "purge")
@click.argument("stream")
@click.argument("ids", nargs=-1, metavar="[ID]...")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    envvar="PULSES_ALL",
    show_envvar=True,
    help="Purge every dead letter.",
)
@click.option(
    "--yes",
    is_flag=True,
    envvar="PULSES_YES",
    show_envvar=True,
    help="Do not ask for confirmation.",
)
def dlq_purge(url: str, stream: str, ids: tuple[str, ...], everything: bool, yes: bool) -> None:
    """Delete dead letters of STREAM for good."""
    chosen = _chosen(ids, everything, "purge")
    what = "every dead letter" if chosen is None else _count(len(chosen), "dead letter")
    if not yes:
        click.confirm(f"delete {what} of {stream} ({redact_url(url)})?", abort=True)

    async def go(admin: StreamAdmin) -> None:
        purged = await admin.purge(stream, chosen)
        click.echo(f"purged {_count(purged, 'dead letter')} of {stream}")

    _run(_with_admin(url, go))


# -- trim ----------------------------------------------------------------------------


@_broker_command(main)
@click.argument("stream")
@click.option(
    "--dry-run",
    is_flag=True,
    envvar="PULSES_DRY_RUN",
    show_envvar=True,
    help="Count what would go, remove nothing.",
)
@click.option(
    "--keep",
    default=None,
    envvar="PULSES_KEEP",
    show_envvar=True,
    metavar="COUNT|AGE",
    help="Leave the newest entries: a count (1000) or an age (24h) [default: none].",
)
def trim(url: str, stream: str, dry_run: bool, keep: str | None) -> None:
    """Remove entries of STREAM that every consumer group has acknowledged, oldest
    first, but the history given by --keep (what a worker's retention does)."""
    history = None if keep is None else _retention(keep, "--keep")
    if keep is not None and history is None:
        raise click.BadParameter("'off' keeps everything: nothing to trim", param_hint="'--keep'")

    async def go(admin: StreamAdmin) -> None:
        count = await admin.trim(
            stream,
            dry_run=dry_run,
            keep=history.keep if history else None,
            keep_ms=history.keep_ms if history else None,
        )
        verb = "would remove" if dry_run else "removed"
        click.echo(
            f"{verb} {_count(count, 'acknowledged entry', 'acknowledged entries')} of {stream}"
        )

    _run(_with_admin(url, go))
