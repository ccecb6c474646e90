"""Sessions: tests (CPython 3.11-3.13), lint, typecheck, docs, faults, cluster (3.11); bench.

In CI (``CI=true``) every session runs on every Python it names, and a missing one fails
the run; elsewhere a machine without, say, 3.12 runs the others.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import nox

PYTHONS = ["3.11", "3.12", "3.13"]
PACKAGES = ["-e", "./pulses-core", "-e", "./pulses-memory", "-e", "./pulses-redis"]
PYPROJECT = nox.project.load_toml("pyproject.toml")

nox.options.sessions = ["tests", "lint", "typecheck", "docs", "faults", "cluster", "nats"]
nox.options.error_on_missing_interpreters = os.environ.get("CI", "").lower() in {"1", "true"}
nox.options.reuse_venv = "yes"


def _expose_pyenv_versions() -> None:
    """pyenv's python3.X shims answer only for the selected versions: add all of ours.

    A Python started through a pyenv shim runs with PYENV_VERSION set to that one
    version, so the selection is extended rather than left alone when it is set.
    """
    if shutil.which("pyenv") is None:
        return
    listed = subprocess.run(
        ["pyenv", "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    wanted = sorted((v for v in listed if re.fullmatch(r"3\.1[123]\.\d+", v)), reverse=True)
    selected = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    if wanted:
        os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys([*selected, *wanted]))


_expose_pyenv_versions()


def _install(session: nox.Session, *groups: str) -> None:
    requirements = [r for g in groups for r in nox.project.dependency_groups(PYPROJECT, g)]
    session.install(*PACKAGES, *requirements)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Every test but the fault cases and the cluster tests (their own sessions run
    those); real-Redis tests start their own redis-server."""
    _install(session, "test")
    session.run("pytest", "--ignore=tests/faults", "--ignore=tests/cluster", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    _install(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the three packages, the tests, the examples and the benchmark."""
    _install(session, "typecheck")
    session.install("-e", "./examples/pulses-nats")  # mypy covers examples/, which imports nats
    session.run(
        "mypy",
        "pulses-core/src",
        "pulses-memory/src",
        "pulses-redis/src",
        "tests",
        "examples",
        "bench",
    )


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site (mkdocs.yml); any warning fails the build."""
    _install(session, "docs")
    session.run("mkdocs", "build", "--strict", "--site-dir", f"{session.create_tmp()}/site")


@nox.session(python="3.11")
def faults(session: nox.Session) -> None:
    """Every fault case (slow ones too), three seeds each, then docs/faults.md's table."""
    _install(session, "test")
    session.env.update(PULSES_FAULTS="all", PULSES_FAULT_SEEDS="1,2,3")
    session.run("pytest", "tests/faults", *session.posargs)
    session.run("python", "tests/faults/summarize.py")


@nox.session(python="3.11")
def cluster(session: nox.Session) -> None:
    """On a local Redis Cluster of real redis-servers (3 masters, 3 replicas) and a
    Sentinel set-up the tests start: the conformance suite, the quick start and the
    fault cases (a master killed, a worker killed, a slot resharded under load), three
    seeds each."""
    _install(session, "test")
    session.env.update(PULSES_FAULT_SEEDS="1,2,3")
    session.run("pytest", "tests/cluster", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmark (docs/performance.md): against REDIS_URL or a redis-server it starts;
    ``nox -s bench -- --full`` also drains a 1M backlog."""
    _install(session, "test")
    session.run("python", "-m", "bench", *session.posargs)


@nox.session(python="3.11")
def nats(session: nox.Session) -> None:
    """The third-party example broker on NATS JetStream: its tests, with the shipped
    conformance suite, against a nats-server -js they start (CI requires one)."""
    _install(session, "test")
    session.install("-e", "./examples/pulses-nats")
    session.run("mypy", "examples/pulses-nats/src")
    session.run("pytest", "examples/pulses-nats/tests", *session.posargs)
