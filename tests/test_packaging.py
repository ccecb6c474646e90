"""The three distributions as an index shows them: one version, the licence in every
archive, authors, URLs, classifiers, and READMEs whose links work off the repository."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.message import Message
from email.parser import HeaderParser
from pathlib import Path

import pytest

import pulses
import pulses_memory
import pulses_redis

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pulses-core": pulses, "pulses-memory": pulses_memory, "pulses-redis": pulses_redis}
BROKERS = ["pulses-memory", "pulses-redis"]


def _project(distribution: str) -> dict[str, object]:
    text = (ROOT / distribution / "pyproject.toml").read_text()
    project: dict[str, object] = tomllib.loads(text)["project"]
    return project


def test_the_three_packages_share_one_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?", pulses.__version__)
    assert pulses_memory.__version__ == pulses.__version__
    assert pulses_redis.__version__ == pulses.__version__


@pytest.mark.parametrize("distribution", BROKERS)
def test_a_broker_requires_pulses_core_of_its_own_version(distribution: str) -> None:
    dependencies = _project(distribution)["dependencies"]
    assert isinstance(dependencies, list)
    assert f"pulses-core=={pulses.__version__}" in dependencies


@pytest.mark.parametrize("distribution", PACKAGES)
def test_each_package_carries_the_repositorys_license(distribution: str) -> None:
    # Hatchling takes licence files from the package directory only: a copy, kept equal.
    assert (ROOT / distribution / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sdists, and wheels built from them as pip would, of the three distributions."""
    out = tmp_path_factory.mktemp("dist")
    for distribution in PACKAGES:
        command = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out)]
        done = subprocess.run(
            [*command, str(ROOT / distribution)], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return out


def _metadata(wheel: zipfile.ZipFile) -> Message:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return HeaderParser().parsestr(wheel.read(name).decode())


@pytest.mark.slow
@pytest.mark.parametrize("distribution", PACKAGES)
def test_wheel_and_sdist_read_well_on_an_index(built: Path, distribution: str) -> None:
    stem = f"{distribution.replace('-', '_')}-{pulses.__version__}"
    license_text = (ROOT / "LICENSE").read_bytes()
    with (
        zipfile.ZipFile(built / f"{stem}-py3-none-any.whl") as wheel,
        tarfile.open(built / f"{stem}.tar.gz") as sdist,
    ):
        assert wheel.read(f"{stem}.dist-info/licenses/LICENSE") == license_text
        member = sdist.extractfile(f"{stem}/LICENSE")
        assert member is not None
        assert member.read() == license_text
        metadata = _metadata(wheel)

    assert metadata["Version"] == pulses.__version__
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Author"]
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL", []))
    assert set(urls) >= {"Documentation", "Repository", "Issues"}
    assert all(u.startswith("https://") for u in urls.values())
    classifiers = metadata.get_all("Classifier", [])
    for wanted in ("Development Status", "Python :: 3.11", "Python :: 3.13", "Typing :: Typed"):
        assert any(wanted in c for c in classifiers), wanted

    readme = metadata.get_payload()
    assert isinstance(readme, str)
    assert readme.startswith(f"# {distribution}\n")
    links = re.findall(r"\]\(([^)]*)\)", readme)
    assert links
    assert [link for link in links if not link.startswith("https://")] == []
