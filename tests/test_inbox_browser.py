"""The inbox in a real browser: Debian's headless Chromium, driven by Selenium, against
``copyhunt serve`` (uvicorn) on 127.0.0.1, over a database seeded through load_hits with real
images in a blob store. Signs in, filters, opens a hit, checks both images rendered with the matched
region outlined, claims it, and saves screenshots to test-artifacts/. A second test is a new
person: signs up, confirms the address from the mail in the outbox, signs in, signs out.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``apt-get install chromium chromium-driver``;
.ci/run installs them). Skipped when they are missing, except under CI=true, where it fails.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import select

from conftest import REPO
from copyhunt.config import Settings
from copyhunt.hitsdb.models import Hit, HitEvent
from copyhunt.hitsdb.store import create_schema, make_engine
from inbox_seed import D2, PLANTED, Seeded, seed

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        message = f"{', '.join(missing)} missing: apt-get install chromium chromium-driver"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)  # CI installs them (.ci/run): a missing browser is a broken CI, not a skip
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, base: str, settings: Settings, seeded: Seeded):
        self.base, self.settings, self.seeded = base, settings, seeded


@contextlib.contextmanager
def running_inbox(tmp_path: Path, home: Path, extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """``copyhunt serve`` in a subprocess on a free loopback port, its settings from COPYHUNT_HOME
    (and ``extra_env``); yields the base URL once /healthz answers, and stops the server after."""
    port = _free_port()
    env = {**os.environ, **(extra_env or {}), "COPYHUNT_HOME": str(home), "COPYHUNT_CUSTOMERS_FILE": str(home / "none.toml"),
           "COPYHUNT_INBOX_URL": f"http://127.0.0.1:{port}"}  # the links in account mails
    env.pop("COPYHUNT_HITS_DB_URL", None)
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("copyhunt")), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail("copyhunt serve did not start:\n" + (tmp_path / "serve.log").read_text(errors="replace"))
            time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    _require_browser()
    home = tmp_path / "home"
    settings = Settings(home=home)
    engine = make_engine(settings.database_url)
    create_schema(engine)
    seeded = seed(engine, settings.blob_root)
    engine.dispose()
    with running_inbox(tmp_path, home) as base:
        yield Served(base, settings, seeded)


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never try to download anything
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tmp_path / "chromium-profile"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1400,1700"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _click_and_load(driver, element, timeout: float = 15) -> None:
    """Click something that loads a new page, and wait until the old page is gone."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element(By.TAG_NAME, "html")
    element.click()

    def old_page_gone(_) -> bool:
        try:
            old.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            # Asked while the new document replaces the old one, chromedriver can answer that the
            # node no longer belongs to the document instead of calling it stale (a CI run saw it).
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    WebDriverWait(driver, timeout).until(old_page_gone)
    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.readyState") == "complete")


def _ids_on_page(driver) -> list[int]:
    from selenium.webdriver.common.by import By

    return [int(tr.get_attribute("data-hit-id")) for tr in driver.find_elements(By.CSS_SELECTOR, "#hits tbody tr")]


def test_sign_in_filter_open_and_claim_in_chromium(served: Served, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    driver = browser
    mine = [p for p in PLANTED if p.customer_id == "alpine-lens"]
    ids = served.seeded.hit_ids

    driver.get(f"{served.base}/hits")
    assert driver.current_url == f"{served.base}/signin"  # not signed in: sent to the sign-in page
    driver.find_element(By.ID, "token").send_keys(served.seeded.tokens["alpine-lens"])
    _click_and_load(driver, driver.find_element(By.ID, "signin-button"))
    assert driver.current_url == f"{served.base}/hits"
    assert driver.find_element(By.ID, "signed-in-as").text == "Alpine Lens Agency"
    by_value = sorted(mine, key=lambda p: (-p.value_cents, -p.run_date.toordinal()))
    assert _ids_on_page(driver) == [ids[p.page] for p in by_value]
    # The hostile title is shown as text, not run: no alert, and its tag is literal text.
    assert "<script>alert('pwned')</script>" in driver.find_element(By.ID, "hits").text

    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "inbox-list.png"))

    # Filter: new hits with a score of at least 0.9, newest first.
    Select(driver.find_element(By.ID, "f-status")).select_by_value("new")
    driver.find_element(By.ID, "f-min-score").send_keys("0.9")
    Select(driver.find_element(By.ID, "f-sort")).select_by_value("date")
    _click_and_load(driver, driver.find_element(By.ID, "apply-filters"))
    assert "min_score=0.9" in driver.current_url and "status=new" in driver.current_url and "sort=date" in driver.current_url
    expected = [p for p in mine if p.score >= 0.9]
    assert sorted(_ids_on_page(driver)) == sorted(ids[p.page] for p in expected)
    assert driver.find_element(By.ID, "total").text == str(len(expected))

    # Open the most valuable one.
    target = max(expected, key=lambda p: p.value_cents)
    _click_and_load(driver, driver.find_element(By.CSS_SELECTOR, f'tr[data-hit-id="{ids[target.page]}"] a.hit-link'))
    assert driver.current_url == f"{served.base}/hits/{ids[target.page]}"
    assert driver.find_element(By.ID, "hit-title").text == target.title
    for image_id in ("registered-image", "found-image"):
        img = driver.find_element(By.ID, image_id)
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0, image_id
    # The outline sits over the pasted copy: its box, in page pixels, matches the planted box.
    found = driver.find_element(By.ID, "found-image").rect
    outline = driver.find_element(By.ID, "query-region").rect
    x0, y0, x1, y1 = target.paste
    assert outline["x"] - found["x"] == pytest.approx(x0 * found["width"], abs=3)
    assert outline["y"] - found["y"] == pytest.approx(y0 * found["height"], abs=3)
    assert outline["width"] == pytest.approx((x1 - x0) * found["width"], abs=3)
    assert outline["height"] == pytest.approx((y1 - y0) * found["height"], abs=3)
    assert driver.find_element(By.ID, "page-link").get_attribute("href") == f"https://{target.page}/story"

    # Mark it: claim, with a note.
    driver.find_element(By.ID, "note").send_keys("Invoice 2026-031 sent")
    _click_and_load(driver, driver.find_element(By.ID, "action-claim"))
    assert driver.find_element(By.ID, "done").text == "Marked as claimed."
    assert driver.find_element(By.ID, "hit-status").text == "claimed"
    assert "Invoice 2026-031 sent" in driver.find_element(By.ID, "history").text
    driver.save_screenshot(str(ARTIFACTS / "inbox-hit.png"))

    engine = make_engine(served.settings.database_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(Hit.status).where(Hit.id == ids[target.page])).scalar_one() == "claimed"
            events = conn.execute(select(HitEvent.status, HitEvent.note).where(HitEvent.hit_id == ids[target.page])).all()
    finally:
        engine.dispose()
    assert [tuple(e) for e in events] == [("claimed", "Invoice 2026-031 sent")]
    assert D2  # the seeded data spans two run dates (see inbox_seed)


def sign_up_confirm_and_sign_in(driver, base: str, outbox: Path, name: str, address: str, password: str) -> None:
    """A new person's way in: the sign-up form, the confirmation link from the mail in the outbox,
    then the password sign-in, which lands on the inbox."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base}/signin")
    _click_and_load(driver, driver.find_element(By.ID, "signup-link"))
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.ID, "email").send_keys(address)
    driver.find_element(By.ID, "password").send_keys(password)
    _click_and_load(driver, driver.find_element(By.ID, "signup-button"))
    assert address in driver.find_element(By.ID, "check-mail").text

    (eml,) = (outbox / "accounts").glob("*-confirm-*.eml")
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert address in message["To"]
    link = re.search(r"http://\S+/signup/confirm\?token=\S+", message.get_content()).group(0)  # type: ignore[union-attr, attr-defined]
    assert link.startswith(base)
    driver.get(link)
    _click_and_load(driver, driver.find_element(By.ID, "confirm-button"))
    assert driver.current_url == f"{base}/signin?done=confirmed"
    assert "confirmed" in driver.find_element(By.ID, "signin-notice").text

    driver.find_element(By.ID, "email").send_keys(address)
    driver.find_element(By.ID, "password").send_keys(password)
    _click_and_load(driver, driver.find_element(By.ID, "password-signin-button"))
    assert driver.current_url == f"{base}/hits"
    assert driver.find_element(By.ID, "signed-in-as").text == name


def test_sign_up_confirm_sign_in_and_sign_out_in_chromium(served: Served, browser) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    sign_up_confirm_and_sign_in(driver, served.base, served.settings.outbox, "Mira Lindqvist", "mira@example.org",
                                "a long enough passphrase")
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "inbox-signed-up.png"))

    _click_and_load(driver, driver.find_element(By.ID, "signout"))
    assert driver.current_url == f"{served.base}/signin"
    driver.get(f"{served.base}/hits")
    assert driver.current_url == f"{served.base}/signin"  # signed out: the inbox is closed again
