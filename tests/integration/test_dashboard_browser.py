"""The dashboard in a real browser: ``gridlrt dashboard`` as a subprocess on a free port, over
an embedded pool whose pipeline run a slow local pilot is working through, driven by headless
Chromium (Debian's ``chromium`` and ``chromium-driver``) with selenium.

The pages render; the counts are those of ``gridlrt status --json``; a live count changes
while the pilot works without the page being reloaded; the token page of the failed token
shows its error; no page shows the pool's password; bound to 0.0.0.0 the dashboard refuses a
request without the access token it printed and accepts one with it. Screenshots of the main
pages are kept as test artefacts (under the test's tmp dir, or ``$GRIDLRT_SCREENSHOTS``).
A missing Chromium fails the test with a one-line reason (``make setup`` installs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.gridlrt_cli import cli_env, gridlrt

SUBBANDS = 8
BAD = 5
PIPELINE = """
name = "watch"
description = "a slow run to watch"
[inputs]
target = "target subbands"

[[stage]]
name = "prep"
step = "slowprep"
over = "target"

[[stage]]
name = "band"
step = "concat"
over = "prep"
gather = "all"
min_done = 0.5
"""
STEP = """name = "{name}"
kind = "command"
command = ["sh", "-c", '{script}']
max_attempts = 1
[inputs]
kind = "file"
[outputs]
keep = ["{out}"]
url = "{{root}}/{{pipeline}}/{{stage}}/{{group_label}}/{{name}}"
"""
SCRIPTS = {
    "slowprep": (
        "part.txt",
        "sleep 1.5 && grep -qv bad {local_inputs} && cat {local_inputs} > part.txt",
    ),
    "concat": ("band.txt", "cat {local_inputs} > band.txt"),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def serve(env: dict[str, str], log: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    """``gridlrt dashboard ARGS`` in the background; its first lines once it answers."""
    out = log.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gridlrt", "dashboard", *args],
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
    )
    port = args[args.index("--port") + 1]

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"gridlrt dashboard exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=1):
                return True
        except OSError:
            return False

    wait_until(answers, "the dashboard to listen", 30)
    return proc, log.read_text()


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def browser() -> Iterator[object]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail(
            "chromium/chromedriver not installed: run make setup (apt-get install chromium "
            "chromium-driver)",
            pytrace=False,
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def start_run(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """The pipeline run created, one slow local pilot started on it."""
    lta = tmp_path / "lta"
    lta.mkdir()
    urls = []
    for sb in range(SUBBANDS):
        path = lta / f"L300_SB{sb:03d}_uv.txt"
        path.write_text("bad\n" if sb == BAD else f"L300_SB{sb:03d}\n")
        urls.append(path.as_uri())
    listed = tmp_path / "target_srm.txt"
    listed.write_text("\n".join(urls) + "\n")
    steps = tmp_path / "steps"
    steps.mkdir()
    for name, (out, script) in SCRIPTS.items():
        (steps / f"{name}.toml").write_text(STEP.format(name=name, script=script, out=out))
    definition = tmp_path / "watch.toml"
    definition.write_text(PIPELINE)
    gridlrt(env, "pipeline", "create", str(definition), "--steps-dir", str(steps),
            "-i", f"target={listed}")  # fmt: skip
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gridlrt",
            "worker",
            "run",
            "--steps-dir",
            str(steps),
            "--output-root",
            (tmp_path / "results").as_uri(),
            "--workdir",
            str(tmp_path / "wd"),
            "--poll-interval",
            "0.2s",
            "--heartbeat",
            "2s",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def screenshots_dir(tmp_path: Path) -> Path:
    where = Path(os.environ.get("GRIDLRT_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_dashboard_in_a_browser_while_a_pilot_works(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    driver = browser
    env = cli_env(tmp_path, GRIDLRT_POOL=f"sqlite:///{tmp_path / 'pool.sqlite'}")
    pilot = start_run(tmp_path, env)
    port = free_port()
    dashboard, banner = serve(env, tmp_path / "dashboard.log", "--port", str(port),
                              "--refresh", "1s")  # fmt: skip
    shots = screenshots_dir(tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        assert f"http://localhost:{port}/" in banner and "ssh -L" in banner
        # overview: renders, and its done count moves while the pilot works, without reload
        driver.get(base + "/")
        assert "gridlrt" in driver.title
        driver.execute_script("window.notReloaded = 'yes';")

        def done_now() -> int:
            return int(driver.find_element(By.ID, "total-done").get_attribute("data-n") or -1)

        first = done_now()
        wait_until(lambda: done_now() > first, "the live done count to change", 60)
        assert driver.execute_script("return window.notReloaded;") == "yes"
        live = driver.find_element(By.ID, "overview")
        assert int(live.get_attribute("data-refreshes") or 0) >= 1
        assert driver.find_element(By.CSS_SELECTOR, 'tr[data-stage="prep"] .bar')
        driver.save_screenshot(str(shots / "overview.png"))

        # counts match gridlrt status --json (once the pilot is done: a still picture)
        wait_until(lambda: pilot.poll() is not None, "the pilot to finish", 120)
        status = json.loads(gridlrt(env, "status", "--json").stdout)
        prep = next(s for s in status["pipelines"][0]["stages"] if s["name"] == "prep")
        time.sleep(2.5)  # one more refresh after the cache's ttl
        row = driver.find_element(By.CSS_SELECTOR, 'tr[data-stage="prep"]')
        done_cell = row.find_element(By.CSS_SELECTOR, "td[data-done]")
        assert done_cell.text == f"{prep['counts']['done']}/{SUBBANDS}"
        assert prep["counts"]["done"] == SUBBANDS - 1 and prep["counts"]["error"] == 1
        errors = row.find_element(By.CSS_SELECTOR, '[data-count="error"]').text
        assert errors == "1 error"
        driver.save_screenshot(str(shots / "overview-finished.png"))

        # the pipeline page: the DAG; a click on a stage lists its tokens
        driver.get(base + "/pipeline/watch")
        assert driver.find_element(By.CSS_SELECTOR, "svg.dag")
        driver.save_screenshot(str(shots / "pipeline.png"))
        driver.find_element(By.CSS_SELECTOR, 'svg.dag g[data-stage="prep"]').click()
        wait_until(lambda: "/tokens" in driver.current_url, "the stage's tokens")
        matching = driver.find_element(By.ID, "matching").get_attribute("data-n")
        assert matching == str(SUBBANDS)
        driver.save_screenshot(str(shots / "tokens.png"))

        # the failed token's page shows its error
        bad = f"watch.prep.L300_SB{BAD:03d}"
        driver.get(f"{base}/tokens?status=error")
        driver.find_element(By.LINK_TEXT, bad).click()
        wait_until(lambda: driver.current_url.endswith(f"/token/{bad}"), "the token page")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "error" in driver.find_element(By.ID, "token-status").text
        assert "exit" in body.lower() and "attempts (1)" in body
        driver.save_screenshot(str(shots / "token.png"))

        for name in ("pilots", "plots", "data"):
            driver.get(f"{base}/{name}")
            assert driver.find_element(By.CSS_SELECTOR, "main h1").text.lower() == name
            driver.save_screenshot(str(shots / f"{name}.png"))
            if name == "plots":
                assert len(driver.find_elements(By.CSS_SELECTOR, "div.plot svg")) == 2
    finally:
        stop(dashboard)
        if pilot.poll() is None:
            stop(pilot)  # type: ignore[arg-type]
    assert all((shots / f"{n}.png").stat().st_size > 5000 for n in ("overview", "pipeline"))


def test_a_dashboard_bound_beyond_loopback_needs_its_token(browser: object, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    password = "pw-Never-Shown-42"
    env = cli_env(tmp_path, GRIDLRT_POOL=f"sqlite:///{tmp_path / 'pool.sqlite'}")
    gridlrt(env, "pool", "init")
    (tmp_path / "macaroon").write_text("MACAROON-SECRET-VALUE")
    env.update(GRIDLRT_POOL_PASSWORD=password, GRIDLRT_MACAROON_FILE=str(tmp_path / "macaroon"))
    port = free_port()
    dashboard, banner = serve(env, tmp_path / "dashboard.log", "--host", "0.0.0.0",
                              "--port", str(port))  # fmt: skip
    try:
        found = re.search(r"\?token=([A-Za-z0-9_-]+)", banner)
        assert found, banner
        token = found.group(1)
        code, text = http_get(f"http://127.0.0.1:{port}/")
        assert code == 401 and "access token" in text
        assert http_get(f"http://127.0.0.1:{port}/?token=wrong")[0] == 401
        assert http_get(f"http://127.0.0.1:{port}/api/status")[0] == 401
        browser.get(f"http://127.0.0.1:{port}/?token={token}")
        assert browser.current_url == f"http://127.0.0.1:{port}/"  # the token left the URL
        assert browser.find_element(By.CSS_SELECTOR, "main h1").text == "Overview"
        browser.get(f"http://127.0.0.1:{port}/tokens")  # the session cookie, no token
        assert browser.find_element(By.CSS_SELECTOR, "main h1").text == "Tokens"
        for page in ("/", "/tokens", "/pilots", "/plots", "/data", "/api/status"):
            browser.get(f"http://127.0.0.1:{port}{page}")
            source = browser.page_source
            assert password not in source and "MACAROON-SECRET" not in source, page
            assert token not in source, page
    finally:
        stop(dashboard)
