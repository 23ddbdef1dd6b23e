"""The dashboard in a real browser: `robustbench-sys dashboard` on a free 127.0.0.1 port, driven by
Debian's headless Chromium through Playwright (never `playwright install`).  Screenshots go to
the git-ignored screenshots/ folder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _dashboard_store import MODELS, real_store

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "screenshots"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]

if not Path(CHROMIUM).is_file():
    pytest.skip(f"{CHROMIUM} not found (apt-get install chromium; scripts/apt-packages.txt)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright not installed (scripts/setup.d/70-dashboard.sh)")
pytest.importorskip("streamlit", reason="streamlit not installed (scripts/setup.d/70-dashboard.sh)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = real_store(tmp_path_factory)
    port = _free_port()
    log = tmp_path_factory.mktemp("dashboard-log") / "server.log"
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "robustbench_sys.cli", "dashboard", "--results", str(store),
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dashboard did not start (exit {proc.poll()}): {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield {"url": url, "pid": proc.pid, "port": port, "store": store}
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)   # exec'd: this PID is the Streamlit server itself
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def test_server_listens_on_loopback_only(server):
    out = subprocess.run(["ss", "-ltnH", f"sport = :{server['port']}"], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("ss not available")
    local = [line.split()[3] for line in out.stdout.splitlines() if line.strip()]
    assert local and all(a.startswith("127.0.0.1:") for a in local), local


def test_leaderboard_and_viewer_in_chromium(server, page):
    SHOTS.mkdir(exist_ok=True)
    page.goto(server["url"])
    page.get_by_text("Overall (mean rank over families)").wait_for()
    # st.dataframe draws on a canvas; its accessible grid holds the cell text
    grid = page.locator("[data-testid='stDataFrame']").first
    grid.wait_for()
    page.wait_for_function(
        "names => names.every(n => [...document.querySelectorAll(\"[data-testid='stDataFrame']\")]"
        ".some(e => e.innerText.includes(n) || e.textContent.includes(n)))", arg=list(MODELS))
    page.screenshot(path=str(SHOTS / "dashboard-leaderboard.png"), full_page=True)

    page.locator("[data-testid='stSidebar']").get_by_text("Flipped images", exact=True).click()
    page.get_by_text("Flipped images: reference vs noisy pipeline").wait_for()
    page.wait_for_function(
        "() => [...document.querySelectorAll(\"[data-testid='stImage'] img, [data-testid='stImage'] \")]"
        ".filter(i => i.tagName === 'IMG' && i.complete && i.naturalWidth > 0).length >= 2")
    imgs = page.locator("[data-testid='stImage'] img")
    sizes = [imgs.nth(i).evaluate("i => [i.naturalWidth, i.naturalHeight]") for i in range(imgs.count())]
    assert len(sizes) == 2 and all(w == h == 224 for w, h in sizes), sizes
    assert page.get_by_text("reference (clean)").count() >= 1
    page.screenshot(path=str(SHOTS / "dashboard-flipped.png"), full_page=True)
    assert (SHOTS / "dashboard-leaderboard.png").stat().st_size > 10_000
