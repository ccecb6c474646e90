"""``pulses worker -w N``: N worker processes, each its own consumer, kept alive.

Signals reach every child: the first SIGTERM/SIGINT drains them, a second forces them;
the supervisor says so once, for all of them. A child that fails (a non-zero exit, a
kill) while the supervisor is not stopping is started again, with a growing, jittered
pause when children keep dying, so a crash loop cannot spin; a child that exits 0 by
itself (``--burst``) is done.

With ``metrics_dir``, each child serves its metrics on a loopback port it writes there,
and the supervisor's own endpoint sums them (``_metrics_group``); a child's file goes
when the child does.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from pulses._policy import jittered_backoff

__all__ = ["METRICS_DIR_ENV", "SUPERVISOR_ENV", "supervise"]

SUPERVISOR_ENV = "PULSES_SUPERVISOR_PID"
METRICS_DIR_ENV = "PULSES_SUPERVISOR_METRICS_DIR"
"""Where each child writes the port it serves its metrics on (``--metrics-port``)."""

logger = logging.getLogger("pulses.worker")

_MAX_PAUSE = 30.0


def supervise(child_args: Sequence[str], processes: int, metrics_dir: Path | None = None) -> int:
    """Run ``python -m pulses <child_args>`` ``processes`` times; return the exit code."""
    command = [sys.executable, "-m", "pulses", *child_args]
    # Children watch for this pid to vanish: a SIGKILLed supervisor cannot forward signals.
    env = {**os.environ, SUPERVISOR_ENV: str(os.getpid())}
    if metrics_dir is not None:
        env[METRICS_DIR_ENV] = str(metrics_dir)
    children: list[subprocess.Popen[bytes] | None] = [None] * processes
    restarts_at = [0.0] * processes
    started_at = [0.0] * processes
    quick_deaths = [0] * processes
    signals_seen: list[int] = []
    announced = 0

    def forward(signum: int, frame: FrameType | None) -> None:
        signals_seen.append(signum)
        for child in children:
            if child is not None and child.poll() is None:
                child.send_signal(signum)

    def start(slot: int) -> subprocess.Popen[bytes]:
        # Its own process group: a Ctrl+C in the terminal reaches only the supervisor, which
        # forwards it once; otherwise each child would see it twice and force its stop.
        child = subprocess.Popen(command, process_group=0, env=env)  # noqa: S603  (our own interpreter)
        children[slot] = child
        started_at[slot] = time.monotonic()
        return child

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for slot in range(processes):
            start(slot)
        logger.info(
            "started %d worker processes: %s",
            processes,
            ", ".join(str(c.pid) for c in children if c is not None),
        )
        codes: list[int] = [0] * processes
        while True:
            # Logged here, not in the signal handler, which may interrupt a log call.
            for signum in signals_seen[announced:]:
                announced += 1
                _announce(signal.Signals(signum), announced, processes)
            alive = 0
            for slot, child in enumerate(children):
                if child is None:
                    if not signals_seen and time.monotonic() >= restarts_at[slot]:
                        logger.warning(
                            "restarted worker process %d as pid %d", slot, start(slot).pid
                        )
                        alive += 1
                    continue
                code = child.poll()
                if code is None:
                    alive += 1
                    continue
                codes[slot] = code
                if metrics_dir is not None:
                    (metrics_dir / str(child.pid)).unlink(missing_ok=True)
                if signals_seen or code == 0:
                    continue
                # Died on its own: start it again after a pause that grows while it keeps
                # dying young, and starts small again after a long life.
                lived = time.monotonic() - started_at[slot]
                quick_deaths[slot] = 1 if lived > _MAX_PAUSE else quick_deaths[slot] + 1
                pause = jittered_backoff(quick_deaths[slot], 0.5, _MAX_PAUSE)
                restarts_at[slot] = time.monotonic() + pause
                children[slot] = None
                logger.error(
                    "worker process pid %d exited with %d; restarting in %.1fs",
                    child.pid,
                    code,
                    pause,
                )
                alive += 1
            if alive == 0:
                return max(codes, default=0)
            time.sleep(0.05)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _announce(signum: signal.Signals, nth: int, processes: int) -> None:
    if nth == 1:
        logger.warning(
            "%s: the %d worker processes finish their running handlers, then stop; "
            "press Ctrl+C again to force",
            signum.name,
            processes,
        )
    elif nth == 2:
        logger.warning(
            "%s again: stopping the worker processes now; unfinished messages stay pending",
            signum.name,
        )
