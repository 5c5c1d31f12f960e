"""The login page of examples/webapp_flask.py (what `make run` serves on :8000), in a real headless
Chromium: a number, the call at the sandbox's phone, the code typed back.

The stack is the embedded backend with one worker, the session's sandbox as ihuyi, and the
example run by ``flask run`` in a process of its own with a producer's environment (no ihuyi
account), as Procfile.dev runs it. Debian's chromium and chromium-driver drive it through
selenium, the driver named by path: nothing is downloaded at run time. Without them the test
is skipped, and fails under ``CI=true`` (``.ci/run`` installs them).
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest
import requests

from ihuyi.sandbox import PATH
from tests.servers import free_port
from tests.stacks import stop
from tests.support import ROOT, submits, unique_mobile, wait_for
from tests.tasks.backends import own_stack, producer_env

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Chromium as root in a container, with nothing reaching out to the network by itself.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run")
SECONDS = 20  # the longest any step may take

pytestmark = pytest.mark.e2e


def missing() -> list[str]:
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        absent.append("selenium (the test extra)")
    return absent


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if absent := missing():
        message = f"the browser test needs {', '.join(absent)}: apt-get install chromium chromium-driver"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="vc-chromium-") as profile:
        options = Options()
        options.binary_location = CHROMIUM
        for arg in (*CHROMIUM_ARGS, f"--user-data-dir={profile}"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.set_page_load_timeout(SECONDS)
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def site(sandbox) -> Iterator[str]:
    """The example's base URL, served as Procfile.dev serves it, on a stack of its own."""
    with own_stack("embedded", sandbox, MOBILE_THROTTLE="1/60s", VOICECODE_SECRET="page-secret-6c5d4e3f2a") as stack:
        port = free_port()
        # A producer's environment; flask's own .env loading off, so only this stack is used.
        env = {**producer_env(stack), "FLASK_SKIP_DOTENV": "1"}
        web = subprocess.Popen([sys.executable, "-m", "flask", "--app", "examples/webapp_flask.py", "run",
                                "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=(stack.tmp / "web.log").open("w"), stderr=subprocess.STDOUT,
                               start_new_session=True)
        try:
            wait_for(lambda: web.poll() is not None or _answers(f"http://127.0.0.1:{port}/"), SECONDS,
                     what="the web app")
            assert web.poll() is None, (stack.tmp / "web.log").read_text()
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(web)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def message(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "message").text


try:
    from selenium.common.exceptions import WebDriverException
except ImportError:  # the test is skipped then
    WebDriverException = Exception


def fill(driver, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.NAME, name)
    field.clear()
    field.send_keys(value)


def press(driver, button: str, *, twice: bool = False) -> str:
    """Click a button (``twice``: double-click it), wait for the page it leads to, and return that page's message."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    before = driver.find_element(By.ID, "message")
    if twice:
        ActionChains(driver).double_click(driver.find_element(By.ID, button)).perform()
    else:
        driver.find_element(By.ID, button).click()
    # While the next page loads, chromedriver may say the old node is gone in words of its own
    # ("does not belong to the document") rather than as a stale element: asked again, it says stale.
    loading = WebDriverWait(driver, SECONDS, ignored_exceptions=[WebDriverException])
    loading.until(expected_conditions.staleness_of(before))
    return loading.until(message)


def heard(sandbox, mobile: str) -> str:
    """The code of the one call to ``mobile``, read from the sandbox's calls API, as a test in another process would."""
    base = sandbox.url.removesuffix(PATH)

    def calls() -> list[dict]:
        answer = requests.get(f"{base}/_sandbox/calls", params={"method": "Submit"}, timeout=5).json()
        return [call for call in answer if call["mobile"] == mobile]

    [call] = wait_for(calls, SECONDS, what=f"a call to {mobile}")
    return call["content"]


def start(driver, site: str, mobile: str) -> str:
    driver.delete_all_cookies()
    driver.get(site + "/")
    assert message(driver) == "Enter your mobile number: a call will read you a code."
    fill(driver, "mobile", mobile)
    return press(driver, "start")


def masked(mobile: str) -> str:
    return f"{mobile[:3]}****{mobile[-4:]}"


def test_the_code_heard_on_the_sandbox_phone_logs_in(browser, site, sandbox):
    mobile = unique_mobile("138")
    assert start(browser, site, f" {mobile} ") == f"Calling {masked(mobile)}: enter the code the call reads out."
    code = heard(sandbox, mobile)
    # The sandbox's phone page, in a second tab, shows the call with the digits its voice reads.
    page = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(sandbox.url.removesuffix(PATH) + "/")
    phone = browser.page_source  # one snapshot: the page refreshes itself every 2 s
    browser.close()
    browser.switch_to.window(page)
    assert re.search(rf'<td class="mobile">{mobile}</td><td class="digits">{" ".join(code)}</td>'
                     r'<td class="outcome">rang \(code 2 ', phone)
    fill(browser, "code", f"{code} ")  # what a form sends when a space came along
    assert press(browser, "check") == f"Approved: you are logged in as {masked(mobile)}."
    # The number's throttle (MOBILE_THROTTLE 1/60s) on a new call to it, with its retry time.
    retry = re.fullmatch(r"Too many calls to this number: try again in (\d+) s\.", start(browser, site, mobile))
    assert retry and 0 < int(retry[1]) <= 60
    assert len(submits(sandbox, mobile)) == 1


def test_a_wrong_code_is_rejected_with_the_attempts_left(browser, site, sandbox):
    mobile = unique_mobile("138")
    start(browser, site, mobile)
    code = heard(sandbox, mobile)
    fill(browser, "code", f"{(int(code) + 1) % 10**len(code):0{len(code)}d}")
    assert press(browser, "check") == "Rejected: that is not the code (4 attempts left)."
    fill(browser, "code", "12a4")
    assert press(browser, "check") == "Invalid code: type the 4 to 6 digits you heard."  # costs no attempt
    fill(browser, "code", code)
    assert press(browser, "check") == f"Approved: you are logged in as {masked(mobile)}."
    assert start(browser, site, "12345") == "Invalid mobile: check it and try again."


def test_a_double_submit_of_the_form_calls_once(browser, site, sandbox):
    mobile = unique_mobile("138")
    browser.delete_all_cookies()
    browser.get(site + "/")
    fill(browser, "mobile", mobile)
    # The form posted twice at once with its nonce, as an impatient double click can...
    statuses = browser.execute_script("""
        const form = document.querySelector('form[action="/start"]');
        const body = new URLSearchParams(new FormData(form));
        return Promise.all([1, 2].map(() => fetch(form.action, {method: 'POST', body}).then(r => r.status)));
    """)
    assert statuses == [202, 202]
    # ...and a real double click on its button.
    assert press(browser, "start", twice=True) == f"Calling {masked(mobile)}: enter the code the call reads out."
    heard(sandbox, mobile)
    time.sleep(1)  # time enough for a second call, were there one
    assert len(submits(sandbox, mobile)) == 1

