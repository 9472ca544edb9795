"""The query server's web page in a real headless browser (Chromium through selenium): tick
tasks, build, read the report, download the .pt2. Skips, saying why, where no browser is
installed (Debian: apt-get install chromium chromium-driver; pip install selenium)."""
import importlib.util
import shutil
import tempfile
import urllib.request

import pytest
import torch

from Demo import PROFILE
from helpers import load_program, query, server_pool, serving
from poe.server import QueryService

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return server_pool(tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="module")
def browser():
    missing = [what for what, found in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER),
                                        ("selenium", importlib.util.find_spec("selenium"))) if not found]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} for a headless browser (Debian: apt-get install chromium "
                    "chromium-driver; pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory(prefix="poe-chromium-") as profile_dir:
        options.add_argument(f"--user-data-dir={profile_dir}")
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        driver.set_page_load_timeout(60)
        try:
            yield driver
        finally:
            driver.quit()


def wait_for(driver, condition, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


@pytest.mark.slow  # a browser
def test_the_page_builds_a_model_reports_it_and_offers_the_pt2(browser, pool):
    from selenium.webdriver.common.by import By

    with serving(QueryService(pool, test=PROFILE.load(None)[1])) as (host, port):
        base = f"http://{host}:{port}"
        browser.get(base + "/")
        boxes = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "input[name=task]"))
        by_task = {b.get_attribute("value"): b for b in boxes}
        assert list(by_task) == list(pool.profile.hierarchy)
        assert not by_task["blobs"].is_enabled() and by_task["disks"].is_enabled()  # no expert: not offered
        assert "Demo (synthetic shapes)" in browser.find_element(By.ID, "dataset").text

        browser.find_element(By.ID, "build").click()  # nothing ticked: the server's message is shown
        error = wait_for(browser, lambda d: d.find_element(By.ID, "error").text)
        assert error.startswith("error: empty query")

        by_task["rings"].click()
        by_task["disks"].click()
        browser.find_element(By.ID, "evaluate").click()
        browser.find_element(By.ID, "build").click()
        wait_for(browser, lambda d: d.find_element(By.ID, "result").is_displayed())
        status, expected = query((host, port), {"tasks": ["rings", "disks"], "evaluate": True})
        assert status == 200
        text = {name: browser.find_element(By.ID, f"r-{name}").text
                for name in ("tasks", "classes", "accuracy", "cross", "params", "flops", "build")}
        assert text["tasks"] == "disks, rings"  # ticked in page order
        assert text["classes"] == f"6: {', '.join(expected['class_names'])}"
        assert text["accuracy"] == f"{expected['accuracy_pct']:.2f} % on {expected['images']} test images"
        assert text["cross"] == f"{expected['cross_expert_pct']:.2f} % of {expected['errors']} errors"
        assert text["params"] == f"{expected['params']:,}" and text["flops"] == f"{expected['flops'] / 1e6:.2f} M"
        assert text["build"].endswith(" ms") and float(text["build"][:-3]) > 0
        assert browser.find_element(By.ID, "error").text == ""

        link = browser.find_element(By.ID, "download").get_attribute("href")
        assert link == base + "/model.pt2?tasks=disks,rings"
        with urllib.request.urlopen(link, timeout=120) as response:
            program, info = load_program(response.read())
        assert info["class_ids"] == expected["class_ids"]
        assert program(torch.zeros(1, *PROFILE.input_shape)).shape == (1, 6)
