"""The dashboard in a real browser: headless Chromium driven by Playwright, against the
real proxy and its mock providers, checking what a person would see.

Playwright's sync API runs its own event loop and cannot run inside trio, so these
tests are plain sync functions and the proxy runs in a thread of its own with its own
``trio.run`` (:class:`ProxyThread`). One browser and one proxy with traffic are shared
by the module; a second, fresh proxy with client keys serves the key prompt and the
empty state. Nothing sleeps: every wait is Playwright's auto-waiting ``expect`` or a
bounded join. Screenshots go to ``tests/artifacts/``.

Without ``/usr/bin/chromium`` (Debian's ``chromium`` package) the tests are skipped,
unless ``ARBSTR_REQUIRE_BROWSER=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio
from playwright.sync_api import Browser, Page, expect, sync_playwright

from arbstr_trio.config.models import Config
from arbstr_trio.server import Started, serve
from tests.conftest import chat_body, config_from
from tests.test_auth import ENVIRON, GATED, TEAM_A

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
WAIT_MS = 8_000
"""The longest any expectation waits: above the polls (providers 2 s, requests 5 s)."""

# alpha answers streams slowly enough to watch them arrive; gamma always fails, so a
# request for its one model opens its breaker (two attempts, threshold two).
PROXY = """
[server]
listen = "127.0.0.1:0"
graceful_shutdown_ms = 500

[retry]
backoff_base_ms = 1
backoff_max_ms = 5

[breaker]
failure_threshold = 2
open_ms = 600000

[[providers]]
name = "alpha"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini", "gpt-4o"]
input_rate = 150
output_rate = 600

[providers.mock]
chunks = 8
chunk_delay_ms = 60

[[providers]]
name = "beta"
url = "http://mock.invalid/v1"
models = ["gpt-4o-mini", "gpt-4o"]
input_rate = 300
output_rate = 1200
base_fee = 1
requests_per_minute = 600

[providers.mock]
chunks = 5

[[providers]]
name = "gamma"
url = "http://mock.invalid/v1"
models = ["broken-model"]
input_rate = 100
output_rate = 100

[providers.mock]
status = 500
"""

# The page's websocket sent to a path the proxy refuses as it refused /v1/live before
# the feed existed (closed unaccepted, code 1008): the dashboard must fall back to polling.
# (Playwright's route_web_socket cannot close from its sync handler without deadlocking.)
WITHOUT_LIVE_FEED = """
const RealWebSocket = window.WebSocket;
window.WebSocket = class extends RealWebSocket {
  constructor(url, protocols) {
    super(String(url).replace("/v1/live", "/v1/no-live-feed"), protocols);
  }
};
"""


def _browser_missing() -> str | None:
    if CHROMIUM.exists():
        return None
    reason = f"{CHROMIUM} is missing: apt-get install -y chromium (Debian's package)"
    if os.environ.get("ARBSTR_REQUIRE_BROWSER") == "1":
        pytest.fail(f"ARBSTR_REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    return reason


_MISSING = _browser_missing()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")
expect.set_options(timeout=WAIT_MS)


class ProxyThread:
    """``serve`` with its mocks in a background thread, for tests that cannot be async.

    Started and stopped from the test's thread; the request log goes to a scratch
    directory. ``stop`` asks for the graceful shutdown and waits, boundedly, for it.
    """

    def __init__(self, config: Config) -> None:
        self._scratch = tempfile.TemporaryDirectory(prefix="arbstr-ui-")
        self._config = attrs.evolve(
            config,
            database=attrs.evolve(config.database, path=f"{self._scratch.name}/arbstr.db"),
        )
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="proxy", daemon=True)
        self._token: trio.lowlevel.TrioToken | None = None
        self._shutdown: trio.Event | None = None
        self._started: Started | None = None
        self._failure: BaseException | None = None

    def start(self) -> Started:
        self._thread.start()
        if not self._ready.wait(timeout=15):
            raise TimeoutError("the proxy did not start within 15 s")
        if self._failure is not None:
            raise RuntimeError("the proxy failed to start") from self._failure
        assert self._started is not None
        return self._started

    def stop(self) -> None:
        if self._token is not None and self._shutdown is not None:
            trio.from_thread.run_sync(self._shutdown.set, trio_token=self._token)
        self._thread.join(timeout=15)
        self._scratch.cleanup()
        assert not self._thread.is_alive(), "the proxy did not stop within 15 s"
        if self._failure is not None:
            raise RuntimeError("the proxy failed") from self._failure

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:
            self._failure = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._shutdown = shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            self._started = await nursery.start(
                lambda task_status: serve(
                    self._config, mock=True, shutdown_trigger=shutdown.wait, task_status=task_status
                )
            )
            self._ready.set()


@attrs.frozen
class Traffic:
    started: Started
    client: httpx.Client
    retried_id: str
    """A request whose first attempt failed (alpha 503) and whose second succeeded."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, timeout=15_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def traffic() -> Iterator[Traffic]:
    """A proxy that has served some requests: successes, a stream, a retry, a 404."""
    proxy = ProxyThread(config_from(PROXY))
    started = proxy.start()
    try:
        with httpx.Client(base_url=started.url, timeout=10.0) as client:
            for _ in range(4):
                assert client.post("/v1/chat/completions", json=chat_body()).status_code == 200
            stream = client.post("/v1/chat/completions", json=chat_body(stream=True))
            assert stream.status_code == 200
            retried = client.post(
                "/v1/chat/completions",
                json=chat_body(),
                headers={"x-mock-alpha": "status=503; fault_count=1"},
            )
            assert retried.headers["x-arbstr-retries"] == "1/alpha", retried.headers
            unknown = client.post("/v1/chat/completions", json=chat_body("no-such-model"))
            assert unknown.status_code == 404
            yield Traffic(started, client, retried.headers["x-arbstr-request-id"])
    finally:
        proxy.stop()


@pytest.fixture(scope="module")
def gated() -> Iterator[Started]:
    """A fresh proxy with client keys and no traffic at all."""
    proxy = ProxyThread(config_from(GATED, ENVIRON))
    try:
        yield proxy.start()
    finally:
        proxy.stop()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage); a screenshot of it is kept after the test,
    and the test fails if the page threw or showed "[object Object]"."""
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
        assert "[object Object]" not in page.locator("body").inner_text()
        assert errors == [], errors
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        context.close()


def shot(page: Page, name: str) -> None:
    """A screenshot of a moment in a test, beside the one taken at its end."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def stats(client: httpx.Client) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/v1/stats?range=last_24h&bucket=hour").json()
    return document


def test_overview_shows_the_numbers_of_v1_stats(page: Page, traffic: Traffic) -> None:
    page.goto(f"{traffic.started.url}/ui/")
    totals = stats(traffic.client)["totals"]
    assert totals["requests"] >= 7  # at least the fixture's: 6 answered, 1 unknown model
    expected = {
        "requests": str(totals["requests"]),
        "success_rate": f"{100 * totals['successes'] / totals['requests']:.1f}%",
        "cost_sats": f"{totals['cost_sats']:.3f}",
        "savings_sats": f"{totals['savings_sats']:.3f}",
        "latency_p50": f"{totals['latency_ms']['p50']} ms",
        "latency_p95": f"{totals['latency_ms']['p95']} ms",
    }
    for name, text in expected.items():
        expect(page.locator(f"[data-stat={name}]")).to_have_text(text)
    # One chart per metric, drawn from the hourly buckets.
    expect(page.locator("figure.chart-box svg.chart")).to_have_count(3)
    expect(page.locator("svg.chart rect.bar").first).to_be_visible()
    expect(page.locator("svg.chart circle.dot").first).to_be_visible()

    page.select_option("#overview-range", "last_30d")
    expect(page.locator(".footnote")).to_contain_text("per day")
    expect(page.locator("[data-stat=requests]")).to_have_text(str(totals["requests"]))


def test_a_breaker_opening_shows_up_without_the_live_feed(page: Page, traffic: Traffic) -> None:
    """With the websocket refused (as before /v1/live existed), polling keeps it current."""
    page.add_init_script(WITHOUT_LIVE_FEED)
    page.goto(f"{traffic.started.url}/ui/#providers")
    expect(page.locator("#live-status")).to_have_text("live feed unavailable (polling)")
    gamma = page.locator("tr[data-provider=gamma] [data-breaker]")
    expect(gamma).to_have_text("closed")
    expect(page.locator("tr[data-provider=alpha]")).to_contain_text("150 / 600")
    expect(page.locator("tr[data-provider=beta] td").nth(1)).to_have_text("standard")
    # Headroom: beta's configured limit and its use (/health's "limits").
    beta = {p["name"]: p for p in traffic.client.get("/health").json()["providers"]}["beta"]
    used = beta["limits"]["requests_per_minute"]["used"]
    expect(page.locator("tr[data-provider=beta] [data-field=headroom]")).to_have_text(
        f"requests/min: {used} of 600"
    )

    failed = traffic.client.post("/v1/chat/completions", json=chat_body("broken-model"))
    assert failed.status_code == 502
    health = traffic.client.get("/health").json()
    assert {p["name"]: p["breaker"] for p in health["providers"]}["gamma"] == "open"

    expect(gamma).to_have_text("open")
    expect(page.locator("tr[data-provider=gamma] [data-field=breaker]")).to_contain_text("probe in")
    expect(page.locator("[data-health]")).to_have_text("degraded")
    # The same page never showed an error for the refused feed.
    expect(page.locator("[data-notice=error]")).to_have_count(0)


def test_requests_list_filters_and_expands_to_attempts(page: Page, traffic: Traffic) -> None:
    listing = traffic.client.get("/v1/requests").json()["data"]
    page.goto(f"{traffic.started.url}/ui/#requests")
    rows = page.locator("#requests-table tbody tr[data-request-id]")
    expect(rows).to_have_count(len(listing))
    expect(rows.first).to_have_attribute("data-request-id", listing[0]["request_id"])

    retried = page.locator(f'tr[data-request-id="{traffic.retried_id}"]')
    retried.click()
    attempts = page.locator(f'tr[data-detail-for="{traffic.retried_id}"] tr[data-attempt]')
    expect(attempts).to_have_count(2)
    expect(attempts.nth(0)).to_contain_text("http_503")
    expect(attempts.nth(1)).to_contain_text("ok")
    retried.click()
    expect(attempts).to_have_count(0)

    errors = traffic.client.get("/v1/requests?success=false").json()["data"]
    assert errors, "the fixture's traffic has failures"
    page.select_option("#filter-outcome", "false")
    expect(rows).to_have_count(len(errors))
    expect(page.locator("#requests-table")).to_contain_text("model_not_found")
    page.select_option("#filter-outcome", "")
    page.select_option("#filter-model", "gpt-4o")  # served, but never asked for
    expect(page.locator("[data-notice=empty]")).to_have_text("No requests match these filters.")


def test_playground_streams_an_answer_and_shows_provider_and_cost(
    page: Page, traffic: Traffic
) -> None:
    page.goto(f"{traffic.started.url}/ui/#playground")
    page.select_option("#play-model", "gpt-4o-mini")
    page.fill("#play-prompt", "tell me about routing")
    page.click("#play-send")
    answer = page.locator("#play-answer")
    # Text arrives while the request is still running (Stop shown): it streams.
    expect(answer).not_to_have_text("")
    streaming_seen = page.locator("#play-stop").is_visible()
    expect(page.locator("[data-fact=provider]")).to_have_text("alpha")
    assert streaming_seen, "the answer appeared only once the stream had ended"
    request_id = page.locator("[data-fact=request_id]").inner_text()
    logged = traffic.client.get(f"/v1/requests/{request_id}").json()
    assert logged["streaming"] is True
    assert logged["provider"] == "alpha"
    expect(page.locator("[data-fact=cost]")).to_have_text(f"{logged['cost_sats']:.3f}")
    expect(page.locator("[data-fact=attempts]")).to_have_text("alpha: ok")
    expect(page.locator("[data-fact=retries]")).to_have_text("none")
    assert answer.inner_text().strip(), "the answer is shown"


def test_an_error_is_shown_in_the_proxys_own_words(page: Page, traffic: Traffic) -> None:
    # Open gamma's breaker (if an earlier test has not): then its model gets a 503.
    traffic.client.post("/v1/chat/completions", json=chat_body("broken-model"))
    refused = traffic.client.post("/v1/chat/completions", json=chat_body("broken-model"))
    assert refused.json()["error"]["code"] == "no_healthy_provider"

    page.goto(f"{traffic.started.url}/ui/#playground")
    page.select_option("#play-model", "broken-model")
    page.click("#play-send")
    expect(page.locator("[data-notice=error]")).to_have_text(
        re.compile(
            r"^Request failed: every provider for this model is failing and its circuit "
            r"breaker is open; the next probe is in \d+ s$"
        )
    )


def test_a_gated_proxy_asks_for_the_key_then_shows_how_to_start(page: Page, gated: Started) -> None:
    page.goto(f"{gated.url}/ui/")
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#key-reason")).to_contain_text("this proxy needs an API key")
    shot(page, "key-prompt")
    expect(page.locator("[data-notice=error]").first).to_contain_text("this proxy needs an API key")

    page.fill("#key-input", "not-a-key")
    page.click("#key-save")
    expect(page.locator("#key-reason")).to_have_text(
        "the API key sent is not one this proxy accepts"
    )
    expect(dialog).to_be_visible()

    page.fill("#key-input", TEAM_A)
    page.click("#key-save")
    expect(dialog).to_be_hidden()
    # A fresh install: no charts of nothing, but how to send the first request.
    expect(page.locator("[data-empty=first-request]")).to_be_visible()
    curl = page.locator("[data-snippet=curl]")
    expect(curl).to_contain_text(f"curl -s {gated.url}/v1/chat/completions")
    expect(curl).to_contain_text('-H "Authorization: Bearer $ARBSTR_KEY"')
    expect(page.locator("[data-snippet=python]")).to_contain_text(
        f'OpenAI(base_url="{gated.url}/v1"'
    )
    shot(page, "empty-state")
    stored = page.evaluate("() => [sessionStorage.getItem('arbstr.key'), localStorage.length]")
    assert stored == [TEAM_A, 0]

    # The other views work with the key too, and are empty the same way.
    page.click("a[data-tab=requests]")
    expect(page.locator("#view-requests [data-empty=first-request]")).to_be_visible()
    # A request sent now appears by itself (the live feed, else the 5 s poll).
    sent = httpx.post(
        f"{gated.url}/v1/chat/completions",
        json=chat_body(),
        headers={"authorization": f"Bearer {TEAM_A}"},
        timeout=10,
    )
    request_id = sent.headers["x-arbstr-request-id"]
    expect(page.locator(f'tr[data-request-id="{request_id}"]')).to_contain_text("alpha")
    page.click("a[data-tab=providers]")
    expect(page.locator("tr[data-provider=alpha] [data-breaker]")).to_have_text("closed")
