"""End to end: the chat page in headless Chromium, talking to the service over WebSocket.

The service runs in the test's trio run (``runner_factory``); Chromium is driven with
Selenium through ChromeDriver, whose calls block, so each one runs in a worker thread
(``trio.to_thread.run_sync``) while the service keeps serving. Each person is one
browser window with its own page, hence its own WebSocket.

Needs Chromium and ChromeDriver: on Debian ``apt-get install chromium chromium-driver``
(``.ci/run`` does). Without them the tests are skipped, unless the environment variable
CI is set: then they fail, so that CI cannot pass without running them.

``CHAT_SCREENSHOTS=/some/folder python -m pytest examples/chat`` saves a screenshot of
each page at the end of each test there.
"""

import importlib.util
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from chat_service import ChatService

from triosvc.runners import ServiceRunner

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SELENIUM = importlib.util.find_spec("selenium") is not None

if not (CHROMIUM and CHROMEDRIVER and SELENIUM) and not os.environ.get("CI"):
    pytest.skip(
        "needs Chromium, ChromeDriver and selenium (Debian: apt-get install chromium "
        "chromium-driver; pip install -e '.[test]'); set CI=1 to make their absence a failure",
        allow_module_level=True,
    )

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

#: Seconds a whole test may take, browser start included.
TIMEOUT = 60
#: Seconds to wait for one thing to show on a page.
WAIT = 10

#: Flags that work as root on a machine with no display and no network beyond loopback.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=900,760",
]

T = TypeVar("T")


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[WebDriver]:
    """A headless Chromium with a fresh profile, quit after the test."""
    missing = "CI is set, but %s is missing: apt-get install chromium chromium-driver"
    assert CHROMIUM, missing % "chromium"
    assert CHROMEDRIVER, missing % "chromedriver"
    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the JS console
    # A driver path given: Selenium does not look for (or download) one.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    with trio.fail_after(TIMEOUT):
        driver = await trio.to_thread.run_sync(
            partial(webdriver.Chrome, options=options, service=service)
        )
    try:
        yield driver
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(WAIT):
            await trio.to_thread.run_sync(driver.quit, abandon_on_cancel=True)


class Page:
    """One window of the browser, showing the chat page: what a person does and sees."""

    def __init__(self, driver: WebDriver, window: str, lock: trio.Lock, name: str) -> None:
        self.driver = driver
        self.window = window
        self.lock = lock  # one driver: one command at a time, in the right window
        self.name = name

    async def run(self, action: Callable[[WebDriver], T]) -> T:
        """Run ``action(driver)`` in a thread, with this page's window current."""

        def in_window() -> T:
            self.driver.switch_to.window(self.window)
            return action(self.driver)

        async with self.lock:
            return await trio.to_thread.run_sync(in_window)

    async def wait_until(self, condition: Callable[[WebDriver], object], what: str) -> None:
        """Poll the page every 50 ms for up to WAIT seconds."""
        await self.run(
            lambda driver: WebDriverWait(driver, WAIT, poll_frequency=0.05).until(
                condition, f"{self.name}: {what}"
            )
        )

    async def open(self, url: str) -> None:
        await self.run(lambda driver: driver.get(url))
        await self.wait_until(
            lambda driver: (
                driver.find_element(By.ID, "status").get_attribute("data-state") == "connected"
            ),
            "the page did not connect",
        )

    async def fill(self, fields: dict[str, str], button: str) -> None:
        def type_and_click(driver: WebDriver) -> None:
            for field_id, value in fields.items():
                field = driver.find_element(By.ID, field_id)
                field.clear()
                field.send_keys(value)
            driver.find_element(By.ID, button).click()

        await self.run(type_and_click)

    async def join(self, nickname: str, room: str) -> None:
        await self.fill({"nickname": nickname, "room": room}, "join")
        await self.wait_until(
            lambda driver: driver.find_element(By.ID, "current-room").text == f"# {room}",
            f"did not get into {room}",
        )

    async def say(self, text: str) -> None:
        await self.fill({"text": text}, "send")

    async def whisper(self, to: str, text: str) -> None:
        await self.fill({"whisper-to": to, "whisper-text": text}, "whisper-send")

    async def lines(self) -> list[str]:
        """The text of each line of #messages, without its time."""
        return await self.run(
            lambda driver: driver.execute_script(
                "return [...document.querySelectorAll('#messages .body')].map(b => b.textContent)"
            )
        )

    async def wait_for_line(self, line: str) -> None:
        script = (
            "return [...document.querySelectorAll('#messages .body')]"
            ".some(b => b.textContent === arguments[0])"
        )
        await self.wait_until(
            lambda driver: driver.execute_script(script, line), f"never showed {line!r}"
        )

    async def text_of(self, element_id: str) -> str:
        return await self.run(lambda driver: driver.find_element(By.ID, element_id).text)


@pytest.fixture
async def chat(runner_factory, web_config) -> ServiceRunner:
    """The chat service, running."""
    # No heartbeats: with them on, hypercorn's ping task outlives each closed socket by
    # up to one interval and holds the runner's stop for SHUTDOWN_GRACE_PERIOD + 1 s.
    web_config["WEBSOCKET_HUB_CONFIG"] = {"heartbeat_interval": 0}
    with trio.fail_after(TIMEOUT):
        return await runner_factory(web_config, ChatService)


@pytest.fixture
async def open_page(
    browser: WebDriver, chat: ServiceRunner, request
) -> AsyncIterator[Callable[[str], Awaitable[Page]]]:
    """``await open_page("ada")`` opens the chat page in a new window of the browser."""
    lock = trio.Lock()
    pages: list[Page] = []

    async def open_page(name: str) -> Page:
        def new_window(driver: WebDriver) -> str:
            if pages:  # the browser starts with one window: the first page takes it
                driver.switch_to.new_window("window")
            return driver.current_window_handle

        async with lock:
            window = await trio.to_thread.run_sync(lambda: new_window(browser))
        page = Page(browser, window, lock, name)
        pages.append(page)
        await page.open(f"{chat.url}/")
        return page

    yield open_page

    folder = os.environ.get("CHAT_SCREENSHOTS")
    with trio.fail_after(TIMEOUT):
        if folder:
            await trio.Path(folder).mkdir(parents=True, exist_ok=True)
            for page in pages:
                path = Path(folder) / f"{request.node.name}-{page.name}.png"
                await page.run(lambda driver, path=path: driver.save_screenshot(str(path)))
        # The pages ran without a JavaScript error (a module that failed to load, say).
        errors = await trio.to_thread.run_sync(
            lambda: [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        )
    assert errors == []


async def test_a_message_reaches_the_other_page(open_page):
    with trio.fail_after(TIMEOUT):
        ada = await open_page("ada")
        bob = await open_page("bob")
        await ada.join("ada", "lobby")
        await bob.join("bob", "lobby")
        await ada.wait_for_line("bob joined lobby")

        await ada.say("Hello, Bob!")
        await bob.wait_for_line("ada: Hello, Bob!")
        await bob.say("Hi Ada, the engine works.")
        await ada.wait_for_line("bob: Hi Ada, the engine works.")

        assert await bob.lines() == [
            "bob joined lobby",
            "ada: Hello, Bob!",
            "bob: Hi Ada, the engine works.",
        ]
        assert await ada.text_of("members") == "ada\nbob"

        await bob.run(lambda driver: driver.find_element(By.ID, "leave").click())
        await ada.wait_for_line("bob left lobby")
        assert await ada.text_of("members") == "ada"
        assert await bob.text_of("current-room") == "not in a room"


async def test_a_whisper_reaches_only_its_target(open_page):
    with trio.fail_after(TIMEOUT):
        ada = await open_page("ada")
        bob = await open_page("bob")
        cyd = await open_page("cyd")
        for page in (ada, bob, cyd):
            await page.join(page.name, "lobby")
        await ada.wait_for_line("cyd joined lobby")

        await ada.whisper("bob", "psst, Bob")
        await bob.wait_for_line("private from ada: psst, Bob")
        await ada.wait_for_line("private to bob: psst, Bob")

        # Then a message for everyone: once cyd shows it, cyd has had all it would get.
        await ada.say("that is all")
        await cyd.wait_for_line("ada: that is all")
        assert not [line for line in await cyd.lines() if "psst" in line]

        # An error frame reaches the page as a rejected call, shown in #error.
        await ada.whisper("zed", "anyone?")
        await ada.wait_until(
            lambda driver: (
                driver.find_element(By.ID, "error").text
                == "UnknownNickname: nobody called 'zed' is connected"
            ),
            "did not show the error",
        )


async def test_the_page_shows_that_the_service_went_away(open_page, chat):
    with trio.fail_after(TIMEOUT):
        ada = await open_page("ada")
        await ada.join("ada", "lobby")
        await chat.stop()  # closes every socket with 1001, "going away"
        await ada.wait_until(
            lambda driver: (
                driver.find_element(By.ID, "status").get_attribute("data-state") == "disconnected"
            ),
            "did not notice the socket closing",
        )
        assert await ada.text_of("status") == "disconnected (1001): reload the page to reconnect"
        assert (
            await ada.run(lambda driver: driver.find_element(By.ID, "send").is_enabled()) is False
        )
