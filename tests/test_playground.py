"""The playground page in a real headless browser (Debian's chromium driven by Playwright): pick a
vector, move its strength slider with the keyboard, generate, and see the steered pane differ from the
unsteered one, with tokens coloured by their projection on the vector."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("playwright")

from playwright.sync_api import sync_playwright

from steerlab.server import ServerConfig, ThreadedServer, create_app

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKENS = 12


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        found = shutil.which("chromium")
        reason = f"no chromium binary at {CHROMIUM}" + (f" (found {found})" if found else "")
        pytest.skip(
            f"{reason}: install Debian's chromium (apt-get install -y chromium) to run the browser test"
        )
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield instance
        instance.close()


@pytest.fixture(scope="module")
def server(lm, happy_vector):
    app = create_app(lm, config=ServerConfig(max_tokens=64))
    app.state.steerlab.registry.add("happy", happy_vector)
    with ThreadedServer(app) as running:
        yield running


def test_slider_steers_the_right_pane_and_tokens_are_coloured(lm, browser, server):
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    assert page.inner_text("#model-line").startswith(lm.model_id)

    page.fill("#prompt", "Tell me about your weekend.")
    page.fill("#max-tokens", str(TOKENS))
    slider = page.get_by_label("strength of happy")
    slider.focus()
    # an uncalibrated vector: the slider spans +-0.1 (norm unit) in steps of 0.005, starting at 0
    assert slider.get_attribute("max") == "0.1" and slider.input_value() == "0"
    for _ in range(16):  # 0.00 -> 0.08, one keyboard step at a time
        page.keyboard.press("ArrowRight")
    assert slider.input_value() == "0.08"
    assert page.is_checked("#vector-list input[type=checkbox]")  # moving a slider selects its vector

    page.keyboard.press("Control+Enter")
    page.wait_for_selector("#pane-steered[data-coloured=true]", timeout=240_000)
    plain = page.get_attribute("#pane-plain", "data-text")
    steered = page.get_attribute("#pane-steered", "data-text")
    assert page.get_attribute("#pane-plain", "data-state") == "done"
    assert plain == lm.generate("Tell me about your weekend.", max_new_tokens=TOKENS)
    assert steered and steered != plain

    tokens = page.locator("#pane-steered .tok")
    assert tokens.count() > 3
    assert "".join(tokens.all_text_contents()) == steered
    assert tokens.first.get_attribute("title").startswith("projection ")
    assert page.inner_text("#status") == "Done."
    assert not errors, errors
    page.close()
