"""The dashboard in a real browser: ``gridlrt dashboard --pool URL`` as a subprocess on a free
port, over a pool whose pipeline run a slow local pilot is working through, driven by headless
Chromium (Debian's ``chromium`` and ``chromium-driver``) with selenium. The pool is, in turn,
an embedded one and a CouchDB (the session's pouchdb-server behind its Basic-auth gate) given
as ``http://user:password@host:port/db``.

The pages render; the counts are those of ``gridlrt status --json`` on the same pool; a live
count changes while the pilot works without the page being reloaded; the token page of the
failed token shows its error; no page and nothing the dashboard prints shows the pool's
password or ``user:password@``; bound to 0.0.0.0 the dashboard refuses a request without the
access token it printed and accepts one with it. Screenshots of the main pages are kept as
test artefacts (under the test's tmp dir, or ``$GRIDLRT_SCREENSHOTS``; the CouchDB run's in
its ``couchdb/``). A missing Chromium or pouchdb-server fails the test with a one-line reason
(``make setup`` installs them)."""

from __future__ import annotations

import html
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
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.gridlrt_cli import cli_env, gridlrt
from tests.services.couchdb import SecuredCouchDB

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


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    """One headless Chromium for the module's tests (each gets it clean: see ``browser``)."""
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


@pytest.fixture
def browser(chromium: object) -> object:
    """The module's Chromium on a blank page, without the cookies and cache of an earlier test
    (every dashboard is on 127.0.0.1, and cookies carry across ports). The dashboard's pages
    keep nothing else in the browser (no local or session storage)."""
    from selenium.webdriver.chrome.webdriver import WebDriver

    assert isinstance(chromium, WebDriver)
    chromium.get("about:blank")
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.execute_cdp_cmd("Network.clearBrowserCache", {})
    assert chromium.execute_cdp_cmd("Network.getAllCookies", {})["cookies"] == []
    return chromium


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


#: what the overview shows, read in one go: each stage's "done/total", each step's done count
SHOWN_COUNTS = """
const shown = {};
for (const td of document.querySelectorAll("tr[data-stage] td[data-done]")) {
  shown["stage " + td.parentElement.dataset.stage] = td.textContent;
}
for (const td of document.querySelectorAll("tr[data-step] td[data-done]")) {
  shown["step " + td.parentElement.dataset.step] = td.dataset.done;
}
const errors = document.querySelector('tr[data-stage="prep"] [data-count="error"]');
shown["prep errors"] = errors ? errors.textContent : "";
return shown;
"""


TOTAL_DONE = 'return document.getElementById("total-done").dataset.n;'
READ_AGE = 'return document.getElementById("read-age").textContent;'


def screenshots_dir(tmp_path: Path, sub: str = "") -> Path:
    where = Path(os.environ.get("GRIDLRT_SCREENSHOTS") or tmp_path / "screenshots") / sub
    where.mkdir(parents=True, exist_ok=True)
    return where


@dataclass
class WatchedPool:
    backend: str
    url: str  # what --pool and the pilot's GRIDLRT_POOL get: with the password for CouchDB
    shown: str  # the pool's URL as the dashboard shows it
    secrets: list[str]  # what no page and no output of the dashboard may show


@pytest.fixture(params=["sqlite", pytest.param("couchdb", marks=pytest.mark.couchdb)])
def watched_pool(request: pytest.FixtureRequest, tmp_path: Path) -> WatchedPool:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pool.sqlite'}"
        return WatchedPool("sqlite", url, url, [])
    couch: SecuredCouchDB = request.getfixturevalue("secured_couchdb")
    db = couch.new_database("dashboard").removeprefix("http://")
    user, password = couch.username, couch.password  # the password has # ! & $ in it
    # the password as typed, as HTML and as a URL write it, its random part; the user
    hidden = [password, html.escape(password), quote(password, safe="")]
    hidden += [*re.findall(r"[0-9a-f]{10}", password), f"{user}:"]
    return WatchedPool("couchdb", f"http://{user}:{password}@{db}", f"http://{db}", hidden)


def test_dashboard_in_a_browser_while_a_pilot_works(
    browser: object, watched_pool: WatchedPool, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver

    assert isinstance(browser, WebDriver)
    driver = browser
    env = cli_env(tmp_path, GRIDLRT_POOL=watched_pool.url)
    gridlrt(env, "pool", "init")
    pilot = start_run(tmp_path, env)
    port = free_port()
    log = tmp_path / "dashboard.log"
    dashboard, banner = serve(env, log, "--pool", watched_pool.url, "--port", str(port),
                              "--refresh", "1s")  # fmt: skip
    couch = watched_pool.backend == "couchdb"
    shots = screenshots_dir(tmp_path, "couchdb" if couch else "")
    base = f"http://127.0.0.1:{port}"
    sources: list[tuple[str, str]] = []  # every page's HTML as the browser has it

    def keep_source() -> None:
        sources.append((driver.current_url, driver.page_source))

    try:
        assert f"http://localhost:{port}/" in banner and "ssh -L" in banner
        assert f"gridlrt dashboard of {watched_pool.shown} (read-only)" in banner, banner
        # overview: renders, and its done count moves while the pilot works, without reload
        driver.get(base + "/")
        assert "gridlrt" in driver.title
        keep_source()
        driver.execute_script("window.notReloaded = 'yes';")

        def done_now() -> int:  # read in JavaScript: the element may be swapped meanwhile
            return int(driver.execute_script(TOTAL_DONE) or -1)

        first = done_now()
        wait_until(lambda: done_now() > first, "the live done count to change", 60)
        assert driver.execute_script("return window.notReloaded;") == "yes"
        live = driver.find_element(By.ID, "overview")
        assert int(live.get_attribute("data-refreshes") or 0) >= 1
        assert driver.find_element(By.CSS_SELECTOR, 'tr[data-stage="prep"] .bar')
        assert re.fullmatch(r"read \d+s ago", driver.execute_script(READ_AGE)) is not None
        keep_source()
        driver.save_screenshot(str(shots / "overview.png"))

        # counts match gridlrt status --json (once the pilot is done: a still picture)
        wait_until(lambda: pilot.poll() is not None, "the pilot to finish", 120)
        status = json.loads(gridlrt(env, "status", "--json").stdout)
        prep = next(s for s in status["pipelines"][0]["stages"] if s["name"] == "prep")
        assert prep["counts"]["done"] == SUBBANDS - 1 and prep["counts"]["error"] == 1

        expected = {f"stage {s['name']}": f"{s['counts']['done']}/{s['present']}"
                    for s in status["pipelines"][0]["stages"]}  # fmt: skip
        expected |= {f"step {s['step']}": str(s["counts"]["done"]) for s in status["steps"]}
        expected["prep errors"] = "1 error"
        # the cache's reading expires, the next refresh starts a new one, a later one shows it:
        # the whole picture (read at once: live.js swaps the elements every second)
        wait_until(lambda: driver.execute_script(SHOWN_COUNTS) == expected,
                   f"the overview to show {expected}", 30)  # fmt: skip
        keep_source()
        driver.save_screenshot(str(shots / "overview-finished.png"))

        # the pipeline page: the DAG; a click on a stage lists its tokens
        driver.get(base + "/pipeline/watch")
        assert driver.find_element(By.CSS_SELECTOR, "svg.dag")
        keep_source()
        driver.save_screenshot(str(shots / "pipeline.png"))
        driver.find_element(By.CSS_SELECTOR, 'svg.dag g[data-stage="prep"]').click()
        wait_until(lambda: "/tokens" in driver.current_url, "the stage's tokens")
        matching = driver.find_element(By.ID, "matching").get_attribute("data-n")
        assert matching == str(SUBBANDS)
        keep_source()
        driver.save_screenshot(str(shots / "tokens.png"))

        # the failed token's page shows its error
        bad = f"watch.prep.L300_SB{BAD:03d}"
        driver.get(f"{base}/tokens?status=error")
        keep_source()
        driver.find_element(By.LINK_TEXT, bad).click()
        wait_until(lambda: driver.current_url.endswith(f"/token/{bad}"), "the token page")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "error" in driver.find_element(By.ID, "token-status").text
        assert "exit" in body.lower() and "attempts (1)" in body
        keep_source()
        driver.save_screenshot(str(shots / "token.png"))

        for name in ("pilots", "plots", "data"):
            driver.get(f"{base}/{name}")
            assert driver.find_element(By.CSS_SELECTOR, "main h1").text.lower() == name
            keep_source()
            driver.save_screenshot(str(shots / f"{name}.png"))
            if name == "plots":
                assert len(driver.find_elements(By.CSS_SELECTOR, "div.plot svg")) == 2
        driver.get(base + "/api/status")
        keep_source()
        api = json.loads(driver.find_element(By.TAG_NAME, "body").text)
        assert api["pool"] == watched_pool.shown
        assert [s["counts"] for s in api["steps"]] == [s["counts"] for s in status["steps"]]
    finally:
        stop(dashboard)
        if pilot.poll() is None:
            stop(pilot)  # type: ignore[arg-type]
    assert all((shots / f"{n}.png").stat().st_size > 5000 for n in ("overview", "pipeline"))
    # no secret in any page the browser showed, nor in anything the dashboard printed
    assert len({url for url, _ in sources}) == 9, [url for url, _ in sources]
    printed = log.read_text()
    for secret in watched_pool.secrets:
        assert not [url for url, html in sources if secret in html], secret
        assert secret not in printed, printed


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
