"""The front door in a real browser, as a new photographer meets it: Debian's headless Chromium
(Selenium) against ``copyhunt serve`` on 127.0.0.1, with the demo web on loopback for the import.

One person signs up and confirms the address from the mail in the outbox; uploads three files
(a real photo, a truncated JPEG picked in the file input, and the same photo again dropped on the
drop zone) and sees three correct results; imports the images of a demo-web shop; records a
licence and adds an own site; withdraws an image; signs out. Each step is checked on the page and
in the registry (the hits database) behind it.

Uses the browser fixture of tests/test_inbox_browser.py (skipped without Chromium, failing under
CI=true).
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import select

from conftest import CUSTOMER_IMAGES
from copyhunt import coverage, registry
from copyhunt.config import Settings
from copyhunt.hitsdb.models import Account
from copyhunt.hitsdb.store import create_schema, make_engine
from test_inbox_browser import ARTIFACTS, _click_and_load, _require_browser, browser, running_inbox, sign_up_confirm_and_sign_in  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
SHOP = "nordic-prints.test"


class FrontDoor:
    def __init__(self, base: str, settings: Settings):
        self.base, self.settings = base, settings


@pytest.fixture
def front_door(tmp_path: Path) -> Iterator[FrontDoor]:
    """An empty registry served by ``copyhunt serve``, crawling through the demo web's proxy."""
    _require_browser()
    from copyhunt.demo.web import build, serve
    from copyhunt.demo_run import demo_settings

    web_root = tmp_path / "demo-web"
    build(web_root, REPO / "demo" / "customers.toml")
    home = tmp_path / "home"
    with serve(web_root) as web:
        settings = demo_settings(Settings(home=home), web.proxy_url, web_root / "seeds.txt")
        engine = make_engine(settings.database_url)
        create_schema(engine)
        engine.dispose()
        with running_inbox(tmp_path, home, settings.as_env()) as base:
            yield FrontDoor(base, settings)


def _drop_file(driver, name: str, data: bytes) -> None:
    """Drop a file on the library's drop zone as a person dragging it from their desktop would:
    a ``drop`` event whose DataTransfer holds the file (what upload.js reads)."""
    driver.execute_script(
        """
        var bytes = Uint8Array.from(atob(arguments[1]), function (c) { return c.charCodeAt(0); });
        var transfer = new DataTransfer();
        transfer.items.add(new File([bytes], arguments[0], { type: "image/jpeg" }));
        var zone = document.getElementById("dropzone");
        zone.dispatchEvent(new DragEvent("dragover", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
        """,
        name, base64.b64encode(data).decode("ascii"),
    )


def _set_date(driver, element_id: str, day: dt.date) -> None:
    # A date input's typed format follows the browser's locale; its value is always ISO.
    driver.execute_script("document.getElementById(arguments[0]).value = arguments[1];", element_id, day.isoformat())


@pytest.mark.slow
def test_sign_up_upload_import_licence_own_site_withdraw_and_sign_out_in_chromium(
        front_door: FrontDoor, browser, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver, base = browser, front_door.base
    sign_up_confirm_and_sign_in(driver, base, front_door.settings.outbox, "Sara Holm", "sara@holm-photo.example",
                                "light through the fjord")
    engine = make_engine(front_door.settings.database_url)
    try:
        with engine.connect() as conn:
            customer_id = conn.execute(select(Account.customer_id).where(Account.email == "sara@holm-photo.example")).scalar_one()
        assert registry.list_images(engine, customer_id) == []

        # ---- upload: a good photo, a truncated one (file picker), the good one again (dropped)
        _click_and_load(driver, driver.find_element(By.ID, "nav-library"))
        good = CUSTOMER_IMAGES[2]
        truncated = tmp_path / "harbour-at-dusk.jpg"
        truncated.write_bytes(CUSTOMER_IMAGES[5].read_bytes()[:3000])
        driver.find_element(By.ID, "files").send_keys("\n".join([str(good), str(truncated)]))
        _drop_file(driver, "copy-of-" + good.name, good.read_bytes())

        finished = "#upload-results li[data-status]"
        WebDriverWait(driver, 90).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, finished)) == 3)
        rows = {r.find_element(By.CLASS_NAME, "filename").text: r for r in driver.find_elements(By.CSS_SELECTOR, finished)}
        assert sorted(rows) == sorted([good.name, truncated.name, "copy-of-" + good.name])
        assert rows[good.name].get_attribute("data-status") == "created"
        assert rows[truncated.name].get_attribute("data-status") == "rejected"
        assert "damaged or truncated" in rows[truncated.name].find_element(By.CLASS_NAME, "reason").text
        duplicate = rows["copy-of-" + good.name]
        assert duplicate.get_attribute("data-status") == "existing"
        assert duplicate.find_element(By.TAG_NAME, "strong").text == "already in your library"
        (uploaded,) = registry.list_images(engine, customer_id)
        assert duplicate.find_element(By.TAG_NAME, "a").text == uploaded["image_id"]  # it names the image it already is
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "front-door-upload.png"))

        # ---- import the images of a shop on the demo web
        _click_and_load(driver, driver.find_element(By.ID, "nav-import"))
        driver.find_element(By.ID, "import-url").send_keys(f"http://{SHOP}/")
        driver.set_page_load_timeout(front_door.settings.import_timeout_seconds + 30)  # the page answers when the crawl ends
        _click_and_load(driver, driver.find_element(By.ID, "import-button"), timeout=front_door.settings.import_timeout_seconds + 30)
        created = int(driver.find_element(By.ID, "import-created").text)
        assert created >= 5, driver.find_element(By.ID, "import-summary").text
        images = registry.list_images(engine, customer_id)
        imported = [i for i in images if i["source_kind"] == "import"]
        assert len(imported) == created and len(images) == created + 1
        assert all(i["source_url"].startswith(f"http://{SHOP}/") for i in imported)
        shown = driver.find_elements(By.CSS_SELECTOR, "#upload-results li[data-status=created]")
        assert len(shown) == created

        # ---- a licence for the uploaded photo, to a client's domain
        image_id = uploaded["image_id"]
        driver.get(f"{base}/library/{image_id}")
        driver.find_element(By.ID, "licensee_domain").send_keys("fjord-magazine.example")
        _set_date(driver, "valid_from", dt.date(2026, 1, 1))
        _set_date(driver, "valid_to", dt.date(2027, 12, 31))
        Select(driver.find_element(By.ID, "scope")).select_by_value("this")
        _click_and_load(driver, driver.find_element(By.ID, "save-licence"))
        assert "The licence is saved" in driver.find_element(By.ID, "licence-saved").text
        assert "fjord-magazine.example" in driver.find_element(By.ID, "licence-list").text
        (licence,) = registry.list_licences(engine, customer_id)
        assert licence["licensee_domain"] == "fjord-magazine.example"
        assert (licence["valid_from"], licence["valid_to"]) == (dt.date(2026, 1, 1), dt.date(2027, 12, 31))
        assert licence["image_ids"] == [image_id]

        # ---- an own site in settings, beside the shop the import listed
        driver.get(f"{base}/settings")
        assert driver.find_element(By.ID, f"site-{SHOP}").is_displayed()
        driver.find_element(By.ID, "site-domain").send_keys("https://www.Holm-Agency.example/portfolio")
        driver.find_element(By.ID, "site-note").send_keys("my agency")
        _click_and_load(driver, driver.find_element(By.ID, "add-own-site"))
        assert "holm-agency.example" in driver.find_element(By.ID, "site-message").text
        sites = {s["domain"]: s["source"] for s in coverage.list_own_sites(engine, customer_id)}
        assert sites[SHOP] == "import" and len(sites) == 2
        (added,) = [d for d in sites if d != SHOP]
        assert added.endswith("holm-agency.example")
        assert driver.find_element(By.ID, f"site-{added}").is_displayed()

        # ---- withdraw an imported image; its page says where it came from
        victim = imported[0]["image_id"]
        driver.get(f"{base}/library/{victim}")
        assert driver.find_element(By.ID, "source-link").get_attribute("href") == imported[0]["source_url"]
        _click_and_load(driver, driver.find_element(By.ID, "withdraw-link"))
        _click_and_load(driver, driver.find_element(By.ID, "confirm-withdraw"))
        driver.get(f"{base}/library/{victim}")
        assert driver.find_element(By.ID, "image-status").text.startswith("withdrawn on")
        assert not driver.find_elements(By.ID, "withdraw-link")
        assert registry.get_image(engine, customer_id, victim)["withdrawn_at"] is not None
        assert [i["image_id"] for i in registry.list_images(engine, customer_id, include_withdrawn=False)].count(victim) == 0

        # ---- sign out: the library is closed again
        _click_and_load(driver, driver.find_element(By.ID, "signout"))
        assert driver.current_url == f"{base}/signin"
        driver.get(f"{base}/library")
        assert driver.current_url == f"{base}/signin"
    finally:
        engine.dispose()
