"""Manual evaluation in a real headless Chromium (Debian's chromium + chromium-driver, Selenium):
enter a name, answer three items with the keyboard, reload, resume at the fourth; a screenshot of
the item page is kept (``<pytest tmp>/manual_eval_item.png``) and must not be blank."""
import os
import shutil
import signal

import numpy as np
import pytest
from PIL import Image

from .helpers import needs_shared

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

pytestmark = [needs_shared, pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="Debian's chromium and chromium-driver are not installed (tools/setup_env.sh installs them)")]


def test_keyboard_flow_resume_and_screenshot(tmp_path):
    pytest.importorskip("selenium", reason="manual_eval extra not installed (pip install -e .[manual_eval])")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    from part_distillation.manual_eval import prepare_study, store

    from .test_manual_eval import _free_port, build_methods, start_server

    folders = build_methods(str(tmp_path / "methods"), methods=("grid", "halves"), classes=["cat", "dog", "bird"])
    study = str(tmp_path / "study")
    prepare_study(folders, study, classes=None, per_class=2, seed=0, panel_height=160)
    port = _free_port()
    proc = start_server(study, port)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        wait = WebDriverWait(driver, 20)
        driver.get(f"http://127.0.0.1:{port}/")
        name = wait.until(EC.presence_of_element_located((By.ID, "name")))
        name.send_keys("Ada", Keys.ENTER)
        seen = []
        for _ in range(3):
            item = wait.until(EC.presence_of_element_located((By.ID, "item")))
            seen.append(item.get_attribute("data-position"))
            body = driver.find_element(By.TAG_NAME, "body")
            for q in driver.find_elements(By.CSS_SELECTOR, ".q"):
                body.send_keys("1" if q.get_attribute("data-kind") == "count" else "y")
            body.send_keys(Keys.ENTER)
            # the next item is shown: polled in the page (an element handle of the replaced page can
            # make chromedriver raise an inspector error instead of a staleness error)
            wait.until(lambda d: d.execute_script(
                "const e = document.getElementById('item'); return e && e.getAttribute('data-position')")
                not in (None, seen[-1]))
        driver.refresh()
        item = wait.until(EC.presence_of_element_located((By.ID, "item")))
        assert seen == ["1", "2", "3"] and item.get_attribute("data-position") == "4"
        assert "item 4 of" in driver.find_element(By.TAG_NAME, "body").text
        wait.until(lambda d: d.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
        shot = str(tmp_path / "manual_eval_item.png")
        driver.save_screenshot(shot)
    finally:
        driver.quit()
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    img = np.asarray(Image.open(shot).convert("RGB"), np.float32)
    assert img.shape[0] > 500 and img.std() > 20  # pictures and text, not a blank page
    conn = store.connect(study)
    rows = conn.execute("SELECT COUNT(*), MIN(pa.num_parts), MAX(pa.splits) FROM panel_answers pa").fetchone()
    conn.close()
    assert rows[0] == 3 * 2 and rows[1] == 1 and rows[2] == 1  # 3 items x 2 panels, keyed answers stored
    assert os.path.getsize(shot) > 10000
