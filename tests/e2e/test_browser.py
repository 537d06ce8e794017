"""A real browser (Debian's chromium, headless) opens the mirror's pages over HTTP and from file://."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror_engine.demo import build_channel
from tests.channel_server import ChannelServer
from tests.helpers import make_config, mirror

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed (make test installs them as root)",
)
SHOTS = Path(__file__).resolve().parents[2] / "build" / "test-screenshots"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def visible_packages(driver: object) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#packages tr[data-name]")  # type: ignore[attr-defined]
    return [row.get_attribute("data-name") for row in rows if row.is_displayed()]


def search(driver: object, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "search")  # type: ignore[attr-defined]
    box.clear()
    box.send_keys(text)


def check_pages(driver: object, channel_url: str, file_url: str) -> str:
    """Blocking browser work, run in a thread: the loopback server lives on the test's event loop."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for where, url in (("http", f"{channel_url}index.html"), ("file", file_url)):
        driver.get(url)  # type: ignore[attr-defined]
        shown = visible_packages(driver)
        assert "numpy" in shown and "zlib" in shown, shown
        search(driver, "NUM")
        assert visible_packages(driver) == ["numpy"]
        driver.save_screenshot(str(SHOTS / f"channel-{where}.png"))  # type: ignore[attr-defined]
    driver.get(f"{channel_url}linux-64/index.html")  # type: ignore[attr-defined]
    driver.save_screenshot(str(SHOTS / "subdir.png"))  # type: ignore[attr-defined]
    return str(driver.page_source)  # type: ignore[attr-defined]


async def test_the_channel_page_searches_over_http_and_from_file(tmp_path: Path, browser: object) -> None:
    build_channel(tmp_path / "pkgs")
    config = make_config(tmp_path, channels=["pkgs"], platforms=["linux-64"], python_versions=["3.11"])
    await mirror(config)
    async with ChannelServer(config.mirror_dir) as server:
        channel_url = f"{server.url}{config.dest_channel}/"
        file_url = (config.channel_dir / "index.html").as_uri()
        subdir_source = await asyncio.to_thread(check_pages, browser, channel_url, file_url)
    assert "numpy-1.26.4-py311h64a7726_0.conda" in subdir_source
    assert server.fetched("/anaconda/index.html")
