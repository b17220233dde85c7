"""Swarmbench's tabs in Locust's own web UI, in a real browser (Debian's chromium and chromium-driver, selenium).

The run is started from the web UI's form, as a user would, against a real
server on loopback; the view's numbers must be microseconds that change while
the run goes and stay after Stop. Once in one process and once with
``--processes 2``, where the master shows its workers' figures merged.
``SWARMBENCH_SCREENSHOT=path.png`` keeps a screenshot (the README's).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import ROOT, free_port, kill_group, locust_argv, wait_until

pytestmark = pytest.mark.slow
US = re.compile(r"^\d{1,3}(,\d{3})*$")  # a whole number of µs, as the view writes it


def browser_paths() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        if os.environ.get("SWARMBENCH_REQUIRE_CHROMIUM") == "1":
            pytest.fail("SWARMBENCH_REQUIRE_CHROMIUM=1 but chromium or chromedriver is not on PATH")
        pytest.skip("chromium and chromium-driver are not installed (set SWARMBENCH_REQUIRE_CHROMIUM=1 to require)")
    return chromium, driver


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    chromium, driver_path = browser_paths()
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_AVOID_STATS", "true")  # Selenium Manager: no statistics, no downloads
    monkeypatch.setenv("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--window-size=1500,1100", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def start_web_ui(tmp: Path, server: Any, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """Locust with its web UI on loopback (not headless), the server's PID known; returns it and its URL."""
    port = free_port()
    argv = locust_argv("chat.py", "--web-host", "127.0.0.1", "--web-port", str(port), "-u", "20", "-r", "20",
                       "--host", f"tcp://127.0.0.1:{server.port}", "--server-pid", str(server.pid), *extra)
    log = open(tmp / "locust.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True)  # fmt: skip
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/stats/requests", timeout=5) as response:  # loopback only
        return json.load(response)


def reachable(url: str) -> bool:
    try:
        stats(url)
        return True
    except OSError:
        return False


def table(driver: Any, tab: str) -> list[dict[str, str]]:
    """The rows of the Swarmbench tab titled ``tab``, as {column title: cell text}."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[@role='tab' and contains(., '{tab}')]").click()
    heads = [th.text for th in driver.find_elements(By.XPATH, "//table//thead//th")]
    return [dict(zip(heads, (td.text for td in tr.find_elements(By.TAG_NAME, "td"))))
            for tr in driver.find_elements(By.XPATH, "//table//tbody/tr")]  # fmt: skip


def row(rows: list[dict[str, str]], name: str, over: str) -> dict[str, str] | None:
    return next((r for r in rows if r.get("Name") == name and r.get("Over") == over), None)


def figure(rows: list[dict[str, str]], name: str) -> str | None:
    return next((r.get("Now") for r in rows if r.get("Figure") == name), None)


def poll(read: Callable[[], Any], accept: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline, value = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            value = read()
            if accept(value):
                return value
        except Exception as exc:  # the page re-renders under us (a stale element): read again
            value = exc
        time.sleep(0.5)
    pytest.fail(f"{what}: last read {value!r}"[:2000])


@pytest.mark.parametrize("processes", [0, 2], ids=["local", "processes-2"])
@pytest.mark.timeout(150)
def test_the_swarmbench_view_in_locusts_web_ui(start: Any, browser: Any, tmp_path: Path, processes: int) -> None:
    from selenium.webdriver.common.by import By

    server = start("selectors")
    extra: tuple[str, ...] = ()
    if processes:
        master = str(free_port())
        extra = ("--processes", str(processes), "--master-bind-host", "127.0.0.1", "--master-bind-port", master,
                 "--master-host", "127.0.0.1", "--master-port", master)  # fmt: skip
    proc, url = start_web_ui(tmp_path, server, "--think-time", "0.01", *extra)
    try:
        wait_until(lambda: reachable(url), 30, "the web UI answers")
        if processes:
            wait_until(lambda: stats(url).get("worker_count") == processes, 30, "both workers joined")
        browser.get(url)
        poll(lambda: browser.find_element(By.XPATH, "//button[@type='submit']"), bool, 30, "the start form")
        browser.find_element(By.XPATH, "//button[@type='submit']").click()  # the form's Start, as a user does

        first = poll(lambda: row(table(browser, "Swarmbench latency"), "message", "since start"),
                     lambda r: r is not None and r["Count"] not in ("0", "-"), 40, "message figures while it runs")
        assert US.match(first["p50 (µs)"]) and int(first["p50 (µs)"].replace(",", "")) > 0, first  # µs, not "0 ms"
        assert US.match(first["p99 (µs)"]) and US.match(first["Max (µs)"]), first
        later = poll(lambda: row(table(browser, "Swarmbench latency"), "message", "since start"),
                     lambda r: r is not None and r["Count"] != first["Count"], 30, "the figures change")
        assert int(later["Count"].replace(",", "")) > int(first["Count"].replace(",", ""))
        run = table(browser, "Swarmbench run")
        assert figure(run, "server PID") == str(server.pid) and US.match(figure(run, "server threads") or "")
        if processes:  # both workers' processes are listed, each with a CPU figure
            assert sum(1 for r in run if re.match(r"generator .* pid \d+ CPU", r["Figure"])) == processes, run
        assert stats(url)["extended_stats"][0]["key"] == "swarmbench-latency"
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # the web UI's own /metrics
            families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
        messages = [s.value for s in families["swarmbench_requests"].samples if s.labels.get("name") == "message"]
        assert messages and messages[0] > 0 and families["swarmbench_server_threads"].samples[0].value == 1
        if os.environ.get("SWARMBENCH_SCREENSHOT") and not processes:
            table(browser, "Swarmbench latency")
            browser.save_screenshot(os.environ["SWARMBENCH_SCREENSHOT"])

        browser.find_element(By.XPATH, "//button[normalize-space()='Stop']").click()
        poll(lambda: figure(table(browser, "Swarmbench run"), "Locust state"), lambda s: s == "stopped", 30,
             "the run stops")

        def twice() -> tuple[Any, Any]:  # the workers' last reports come in just after the stop: then it stays
            before = row(table(browser, "Swarmbench latency"), "message", "since start")
            time.sleep(2.5)  # one more poll of the web UI (every 2 s)
            return before, row(table(browser, "Swarmbench latency"), "message", "since start")

        _, kept = poll(twice, lambda pair: pair[0] == pair[1], 30, "the figures stay after Stop")
        assert kept is not None and US.match(kept["p99 (µs)"]), kept
        assert int(kept["Count"].replace(",", "")) >= int(later["Count"].replace(",", "")), (later, kept)
        recent = row(table(browser, "Swarmbench latency"), "message", "last 5 s")
        assert recent is not None and US.match(recent["p50 (µs)"]), recent  # the last stretch of the run, kept
    finally:
        kill_group(proc)
        proc.wait(timeout=10)
