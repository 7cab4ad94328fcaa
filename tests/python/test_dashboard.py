"""The web dashboard in a real browser: Debian's chromium driven by playwright-core (npm), against the
real `reporunner serve` with the dashboard embedded (`make dashboard` before the build). The browser
script is dashboard/e2e/dashboard.mjs; this starts the server, makes the Free user it needs, and runs it.
"""

import os
import shutil
import subprocess
import urllib.request

import pytest

from serve import ADMIN_PASSWORD, ROOT, post, serve_app, zip_tree

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FREE_PASSWORD = "correct-horse-battery-staple-41"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_app(tmp_path_factory) as running:
        yield running


def test_the_dashboard_drives_a_run_shows_usage_and_lets_the_admin_block_a_user(server, tmp_path):
    for need in (CHROMIUM, ROOT / "dashboard" / "node_modules" / "playwright-core"):
        if not os.path.exists(need):
            if os.environ.get("CI") == "true":
                pytest.fail(f"{need} is missing: tests/tools.sh installs chromium, `make dashboard` the npm packages")
            pytest.skip(f"{need} is missing (tests/tools.sh, make dashboard)")
    with urllib.request.urlopen(f"{server['base']}/runs", timeout=10) as reply:
        assert reply.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in reply.headers["content-security-policy"]
        html = reply.read().decode()
    assert '<div id="app">' in html, "this binary carries no dashboard: `make dashboard`, then build it again"
    status, _, body = post(server["base"], "reporunner.auth.v1.AuthService/Register",
                           {"username": "freda", "password": FREE_PASSWORD})
    assert status == 200, body
    archive = tmp_path / "web.zip"
    archive.write_bytes(zip_tree(server["app"]))
    env = dict(os.environ, BASE=server["base"], ARCHIVE_PATH=str(archive), ADMIN_USER="admin", ADMIN_PASSWORD=ADMIN_PASSWORD,
               FREE_USER="freda", FREE_PASSWORD=FREE_PASSWORD, APP_PATH=str(server["app"]),
               CHROMIUM=CHROMIUM, SHOTS=str(tmp_path / "shots"))
    out = subprocess.run(["node", "e2e/dashboard.mjs"], cwd=ROOT / "dashboard", env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-4000:] + server["log"].read_text()[-3000:]
    assert "dashboard e2e: all passed" in out.stdout, out.stdout
    assert (tmp_path / "shots" / "run.png").stat().st_size > 10_000
    assert (tmp_path / "shots" / "usage.png").stat().st_size > 10_000
