"""Browser tests: a live studio (daphne + GPU worker, real processes) driven by Debian's Chromium.

`studio` starts the ASGI server and a worker against the test database; `page` is a Playwright
page in headless Chromium (never a downloaded browser). Screenshots go to ARTIFACTS_DIR
(default `artifacts/screenshots`) so CI keeps them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import ROOT, _worker_env, free_port as _free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
ARTIFACTS = Path(os.environ.get("ARTIFACTS_DIR", ROOT / "artifacts" / "screenshots"))


class LiveStudio:
    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def _spawn(self, name: str, args: list[str]) -> None:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        self.procs.append(subprocess.Popen(args, cwd=ROOT, env=_worker_env(), stdout=open(log, "wb"),
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def start(self, *, worker: bool = True) -> "LiveStudio":
        self._spawn("web", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "flux_studio.asgi:application"])
        if worker:
            self._spawn("worker", [sys.executable, "manage.py", "run_worker", "--queue", "gpu"])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and all(proc.poll() is None for proc in self.procs):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.2)
        # Stopped here, or its worker would go on taking later tests' jobs.
        self.stop()
        raise RuntimeError("the studio did not start:\n" + self.output())

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}" for log in self.logs if log.exists())

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(2)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def studio(transactional_db, tmp_path: Path) -> Iterator[LiveStudio]:
    live = LiveStudio(tmp_path).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def chromium():
    """Chromium for one test module; Playwright (and its event loop) stops after the module."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does this)")
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread while it runs; Django would then
    # refuse the ORM calls the test makes (fixtures, assertions, database flushes), though none of
    # them run inside that loop. Allowed only while Chromium is up; never in the studio's processes.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(chromium, studio: LiveStudio):
    context = chromium.new_context(base_url=studio.url, accept_downloads=True, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    # The studio's pages run under a Content-Security-Policy (flux_studio.csp): anything it blocks
    # (an inline handler or style, a script or image from elsewhere) is a broken page.
    blocked: list[str] = []
    pg.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text else None)
    yield pg
    context.close()
    assert not blocked, f"the page did something its Content-Security-Policy blocks: {blocked}"


def wait_for_js(page, expression: str, arg=None, timeout: float = 20_000) -> None:
    """Page.wait_for_function, asked from here: the studio's Content-Security-Policy forbids the
    in-page eval that Playwright's own polling uses. `expression` is JavaScript that becomes true
    (an expression, or a function of `arg`); `timeout` in ms, as Playwright's."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout / 1000:g} s: {expression}")
        page.wait_for_timeout(50)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_up(page, username: str, password: str = "a long test password 1") -> None:
    page.goto("/accounts/signup/")
    page.fill("#id_username", username)
    page.fill("#id_password1", password)
    page.fill("#id_password2", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/datasets/")
