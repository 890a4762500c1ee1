"""The image library in a real browser: Debian's headless Chromium (Selenium) against ``copyhunt
serve`` on 127.0.0.1, with upload.js running under the app's Content-Security-Policy. Signs in,
opens the library, picks two real photos and one text file named .jpg in the file input, and sees
one result row per file (the bad one with its reason) and the new thumbnails in the grid.

Uses the server and browser fixtures of tests/test_inbox_browser.py (skipped without Chromium,
failing under CI=true).
"""

from __future__ import annotations

from pathlib import Path

from conftest import CUSTOMER_IMAGES
from test_inbox_browser import ARTIFACTS, Served, _click_and_load, browser, served  # noqa: F401 (fixtures)


def test_upload_two_photos_and_a_bad_file_in_chromium(served: Served, browser, tmp_path: Path) -> None:  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    driver.get(f"{served.base}/signin")
    driver.find_element(By.ID, "token").send_keys(served.seeded.tokens["jana-novak"])
    _click_and_load(driver, driver.find_element(By.ID, "signin-button"))
    _click_and_load(driver, driver.find_element(By.ID, "nav-library"))
    assert driver.current_url == f"{served.base}/library"
    assert driver.find_element(By.CSS_SELECTOR, "#dropzone .drop-hint").is_displayed()  # the script ran

    bad = tmp_path / "holiday-notes.jpg"
    bad.write_text("a shopping list, not a picture")
    photos = [CUSTOMER_IMAGES[3], CUSTOMER_IMAGES[4]]
    driver.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in [*photos, bad]))

    finished = "#upload-results li[data-status]"
    WebDriverWait(driver, 90).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, finished)) == 3)
    rows = {r.find_element(By.CLASS_NAME, "filename").text: r for r in driver.find_elements(By.CSS_SELECTOR, finished)}
    assert sorted(rows) == sorted([photos[0].name, photos[1].name, bad.name])
    assert rows[bad.name].get_attribute("data-status") == "rejected"
    assert "not an image" in rows[bad.name].find_element(By.CLASS_NAME, "reason").text
    new_ids = []
    for photo in photos:
        assert rows[photo.name].get_attribute("data-status") == "created"
        assert rows[photo.name].find_element(By.TAG_NAME, "strong").text == "new"
        new_ids.append(photo.stem)

    def thumbnails_loaded(d) -> bool:
        return all(d.execute_script("var i = document.getElementById(arguments[0]); return !!i && i.complete && i.naturalWidth > 0;",
                                    f"thumb-{image_id}") for image_id in new_ids)

    WebDriverWait(driver, 30).until(thumbnails_loaded)
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "library-upload.png"))

    # The grid the server renders has them too, with the thumbnail made at upload.
    driver.get(f"{served.base}/library")
    WebDriverWait(driver, 30).until(thumbnails_loaded)
    grid = driver.find_element(By.ID, "library-grid").text
    assert all(image_id in grid for image_id in new_ids) and "holiday-notes" not in grid
    _click_and_load(driver, driver.find_element(By.CSS_SELECTOR, f"#image-{new_ids[0]} a.title"))
    assert driver.current_url == f"{served.base}/library/{new_ids[0]}"
    assert driver.execute_script("var i = document.getElementById('preview'); return i.complete && i.naturalWidth;") > 0
