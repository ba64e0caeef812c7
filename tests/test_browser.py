"""embed.js in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven
by Selenium), the gateway and the Bitrix24 emulator as real servers, and the landing pages on
another loopback origin, so every post is cross-origin as in production.

Skips, saying why, only where no browser is installed (.ci/run installs one).
"""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from app.pages import SAMPLE_TRACE
from app.store import Store
from tests.conftest import Gateway, Portal, wait_for
from tests.servers import RunningServer

MakeGateway = Callable[..., Awaitable[Gateway]]
# An unclosed socket of Selenium's connection pool (see the `browser` fixture) may be collected
# mid-test here; it is the test driver's leak, not the product's.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # No calls home: only loopback is reachable here, and refused connections cost time.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1024,768",
)

# getTrace() as the tracker returns it, with what must survive the trip byte for byte:
# non-ASCII, +, &, %, quotes, escapes, a line separator, no whitespace between tokens.
STUB_TRACE = json.dumps(
    {
        "url": "https://shop.example/контакты?a=1&b=2+3%20",
        "ref": "https://www.google.com/",
        "device": {"isMobile": False},
        "tags": {"ts": 1767225600, "list": {"utm_source": "yandex", "utm_medium": "cpc"}},
        "pages": {"list": [["https://shop.example/", 1767225600, 'Магазин "№1" <b>\u2028']]},
        "gid": None,
    },
    ensure_ascii=False,
    separators=(",", ":"),
)

# Uncaught errors and rejected promises, kept for the test to read: embed.js never throws.
RECORD_ERRORS = """<script>window.__errors = [];
addEventListener('error', (e) => __errors.push(String(e.message)));
addEventListener('unhandledrejection', (e) => __errors.push(String(e.reason)));</script>"""
# A test clock for the page: ?days=N moves Date.now() N days on (storage expiry).
SHIFT_CLOCK = """<script>(() => {
  const days = +new URLSearchParams(location.search).get('days') || 0;
  const now = Date.now;
  Date.now = () => now.call(Date) + days * 864e5;
})();</script>"""
# Runs the page's timers four times faster: embed.js's retries then take 1.75 s, not 7.
FAST_TIMERS = """<script>(() => {
  const later = window.setTimeout;
  window.setTimeout = (fn, ms, ...args) => later(fn, (ms || 0) / 4, ...args);
})();</script>"""


def js_string(value: str) -> str:
    """A JS string literal safe inside <script> (no `</script>` can end it early)."""
    return json.dumps(value).replace("<", "\\u003c")


def tracker(*, delay_ms: int = 0, behaviour: str = "trace") -> str:
    """A stub b24Tracker; it counts getTrace() calls in localStorage (they are destructive)."""
    result = {
        "trace": f"return {js_string(STUB_TRACE)};",
        "throws": "throw new Error('tracker failed');",
        "object": "return {tags: {}};",
    }[behaviour]
    install = f"""window.b24Tracker = {{guest: {{getTrace: function () {{
  localStorage.setItem('traceCalls', String(+(localStorage.getItem('traceCalls') || 0) + 1));
  {result} }}}}}};"""
    if delay_ms:
        install = f"setTimeout(function () {{ {install} }}, {delay_ms});"
    return f"<script>{install}</script>"


# --------------------------------------------------------------------------- landing pages


@dataclass
class Landing:
    """Pages served from a loopback origin other than the gateway's; `search` is a third one
    (an external referrer). Tests register pages by path with `add`."""

    server: RunningServer
    search: RunningServer
    pages: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    def add(self, path: str, html: str, **headers: str) -> str:
        self.pages[path] = (html, headers)
        return self.url + path


def landing_app(landing_pages: dict[str, tuple[str, dict[str, str]]]) -> Starlette:
    async def serve(request: Request) -> Response:
        found = landing_pages.get(request.url.path)
        if found is None:
            return HTMLResponse("<!doctype html><title>blank</title>", status_code=200)
        html, headers = found
        return HTMLResponse(html, headers={"Cache-Control": "no-store", **headers})

    return Starlette(routes=[Route("/{path:path}", serve)])


def page(
    gateway: Gateway, body: str, *, head: str = "", script: str = "defer", charset: str = "utf-8"
) -> str:
    """A landing page including embed.js from the gateway: in <head> with `defer` or `async`,
    or with script="end" as the last thing in <body>."""
    tag = f'<script src="{gateway.url}/embed.js"{"" if script == "end" else " " + script}>'
    tag += "</script>"
    return f"""<!doctype html><html lang="en"><head><meta charset="{charset}"><title>Landing</title>
{RECORD_ERRORS}{head}{tag if script != "end" else ""}</head>
<body>{body}{tag if script == "end" else ""}</body></html>"""


def form(
    gateway: Gateway,
    *,
    attrs: str = "",
    fields: str = '<input name="name" value="Ann"><input name="phone" value="+49 170 1234567">',
) -> str:
    return f"""<form data-b24-gateway {attrs} method="post" action="{gateway.url}/forms/contact">
{fields}<button type="submit">Send</button>
<p data-b24-success hidden>Thank you, we will call you back.</p>
<p data-b24-error hidden>Not sent yet, retrying.</p></form>"""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "no browser: install Debian's chromium and chromium-driver (.ci/run does) "
            f"[chromium: {CHROMIUM or 'missing'}, chromedriver: {CHROMEDRIVER or 'missing'}]"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()
        # Selenium's HTTP pool to chromedriver can drop a keep-alive socket without closing
        # it; collect such leftovers here, inside this module, so the ResourceWarning is not
        # pinned on whichever later test happens to trigger garbage collection.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


@pytest.fixture(scope="module")
def _landing_servers() -> Iterator[Landing]:
    pages: dict[str, tuple[str, dict[str, str]]] = {}
    app = landing_app(pages)
    landing = Landing(RunningServer(app), RunningServer(app), pages)
    landing.server.start()
    landing.search.start()
    yield landing
    landing.server.stop()
    landing.search.stop()


@pytest.fixture
def landing(_landing_servers: Landing, browser: WebDriver) -> Landing:
    """The landing origin with no pages and an empty localStorage (a first-time visitor)."""
    _landing_servers.pages.clear()
    browser.get(_landing_servers.url + "/blank")
    browser.execute_script("localStorage.clear()")
    return _landing_servers


# --------------------------------------------------------------------------- helpers


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], within: float = 10) -> Any:
    return WebDriverWait(driver, within, poll_frequency=0.05).until(condition)


def submit_button(driver: WebDriver) -> WebElement:
    return driver.find_element(By.CSS_SELECTOR, "form [type=submit]")


def shown(driver: WebDriver, selector: str) -> bool:
    try:
        return driver.find_element(By.CSS_SELECTOR, selector).is_displayed()
    except WebDriverException:  # not there (yet), or the page moved on meanwhile
        return False


def thank_you_page(gateway: Gateway) -> Callable[[WebDriver], bool]:
    """The gateway's own thank-you page: a plain (non-AJAX) post was answered."""
    return lambda d: d.current_url.startswith(gateway.url) and "Thank you" in d.page_source


def page_errors(driver: WebDriver) -> list[str]:
    errors: list[str] = driver.execute_script("return window.__errors")
    return errors


def hidden_fields(driver: WebDriver) -> dict[str, str]:
    fields: dict[str, str] = driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('form input[type=hidden]')]"
        ".map((i) => [i.name, i.value]))"
    )
    return fields


def trace_calls(driver: WebDriver, landing: Landing) -> int:
    """getTrace() calls so far, read on the landing origin (the page may have moved on)."""
    if not driver.current_url.startswith(landing.url):
        driver.get(landing.url + "/blank")
    return int(driver.execute_script("return localStorage.getItem('traceCalls') || 0"))


async def leads(portal: Portal, count: int = 1) -> list[dict[str, Any]]:
    """Waits for `count` leads, then returns them all."""
    found: list[dict[str, Any]] = await wait_for(
        lambda: r if len(r := portal.records("lead")) >= count else None
    )
    return found


async def stored_submissions(gateway: Gateway) -> int:
    store = await gateway.store()
    return sum((await store.count_by_status()).values())


# --------------------------------------------------------------------------- the trace


# An old site in windows-1251 would post its form in that charset; embed.js posts UTF-8.
@pytest.mark.parametrize("charset", ["utf-8", "windows-1251"])
async def test_a_tracker_that_loads_late_still_gives_the_lead_its_trace_byte_for_byte(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway, charset: str
) -> None:
    gateway = await make_gateway(portal)
    html = page(gateway, form(gateway), head=tracker(delay_ms=1000), charset=charset)
    url = landing.add("/contact", html, **{"Content-Type": f"text/html; charset={charset}"})
    browser.get(url)
    submit_button(browser).click()
    # Waiting for the tracker: the button is disabled while the submission is on its way.
    assert not submit_button(browser).is_enabled()
    assert browser.find_element(By.TAG_NAME, "form").get_attribute("data-b24-state") == "sending"
    assert page_errors(browser) == []
    until(browser, thank_you_page(gateway))

    [lead] = await leads(portal)
    assert lead["TRACE"] == STUB_TRACE
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"]) == ("yandex", "cpc")  # from the trace
    assert trace_calls(browser, landing) == 1  # getTrace() is destructive: once, at submit


async def test_a_form_added_after_load_gets_the_trace_and_the_pages_utm_tags(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    # embed.js `async` in <head>; the form comes later (a pop-up, a single-page app).
    late_form = f"""<script>setTimeout(() => document.body.insertAdjacentHTML('beforeend',
      {js_string(form(gateway, attrs="data-b24-ajax"))}), 300);</script>"""
    url = landing.add("/promo", page(gateway, late_form, head=tracker(), script="async"))
    browser.get(url + "?utm_source=vk&utm_medium=social&utm_campaign=launch")
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form"))
    submit_button(browser).click()
    until(browser, lambda d: shown(d, "[data-b24-success]"))

    [lead] = await leads(portal)
    assert lead["TRACE"] == STUB_TRACE
    # The page's own tags win over the trace's (docs/design.md: the form first, then the trace).
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"], lead["UTM_CAMPAIGN"]) == (
        "vk",
        "social",
        "launch",
    )
    assert page_errors(browser) == []


@pytest.mark.parametrize(
    ("behaviour", "expected_calls"),
    [("throws", 1), ("object", 1), ("already-traced", 0)],
    ids=["tracker-throws", "tracker-returns-no-string", "form-has-a-trace"],
)
async def test_a_trace_the_tracker_cannot_give_is_skipped_without_an_error(
    browser: WebDriver,
    landing: Landing,
    portal: Portal,
    make_gateway: MakeGateway,
    behaviour: str,
    expected_calls: int,
) -> None:
    gateway = await make_gateway(portal)
    fields = '<input name="phone" value="+15550001111">'
    own_trace = '{"tags":{"list":{"utm_source":"own"}}}'
    if behaviour == "already-traced":  # an existing non-empty trace field is left alone
        fields += f'<input type="hidden" name="trace" value=\'{own_trace}\'>'
    head = tracker(behaviour="trace" if behaviour == "already-traced" else behaviour)
    url = landing.add(
        "/contact", page(gateway, form(gateway, attrs="data-b24-ajax", fields=fields), head=head)
    )
    browser.get(url)
    submit_button(browser).click()
    until(browser, lambda d: shown(d, "[data-b24-success]"))

    [lead] = await leads(portal)
    if behaviour == "already-traced":
        assert lead["TRACE"] == own_trace
    else:
        assert "TRACE" not in lead or not lead["TRACE"]
    assert page_errors(browser) == []
    assert trace_calls(browser, landing) == expected_calls


# --------------------------------------------------------------------------- attribution


async def test_utm_tags_of_the_landing_page_reach_the_lead_sent_from_another_page(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    ad_url = (
        f"{landing.url}/landing?utm_source=newsletter&utm_medium=email"
        "&utm_campaign=spring+sale&utm_content=from-url&gclid=G-1"
    )
    landing.add("/search", f'<!doctype html><a id="ad" href="{ad_url}">Ad</a>')
    # embed.js at the end of <body>; no tracker at all (blocked, or no consent).
    landing.add("/landing", page(gateway, '<a id="next" href="/contact">Contact</a>', script="end"))
    visible = '<input name="utm_content" value="typed-by-visitor">'  # a visible field wins
    fields = f'<input name="name" value="Ann"><input name="phone" value="+4917012345">{visible}'
    landing.add(
        "/contact", page(gateway, form(gateway, attrs='data-b24-wait-ms="300"', fields=fields))
    )

    search_url = landing.search.url + "/search"
    browser.get(search_url)
    browser.find_element(By.ID, "ad").click()  # from another site: an external referrer
    until(browser, lambda d: d.find_elements(By.ID, "next")).pop().click()
    until(browser, lambda d: d.current_url == landing.url + "/contact")
    submit_button(browser).click()
    until(browser, thank_you_page(gateway))

    [lead] = await leads(portal)
    assert "TRACE" not in lead or not lead["TRACE"]
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"], lead["UTM_CAMPAIGN"]) == (
        "newsletter",
        "email",
        "spring sale",
    )
    assert lead["UTM_CONTENT"] == "typed-by-visitor"
    lines = lead["COMMENTS"].splitlines()
    assert "gclid: G-1" in lines
    assert f"landing_page: {ad_url}" in lines
    # The browser's default referrer policy sends another origin only its origin.
    assert f"referrer: {landing.search.url}/" in lines


async def test_a_new_utm_source_replaces_the_kept_tags_which_expire_after_28_days(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    landing.add("/landing", page(gateway, "<p>Welcome</p>", head=SHIFT_CLOCK))
    contact = landing.add("/contact", page(gateway, form(gateway), head=SHIFT_CLOCK))

    browser.get(landing.url + "/landing?utm_source=google&utm_medium=cpc&utm_campaign=one")
    browser.get(contact)
    kept = hidden_fields(browser)
    assert (kept["utm_source"], kept["utm_medium"], kept["utm_campaign"]) == (
        "google",
        "cpc",
        "one",
    )
    assert kept["submission_id"]

    browser.get(landing.url + "/landing?utm_source=facebook&fbclid=F-2")  # last touch
    browser.get(contact + "?days=27")
    replaced = hidden_fields(browser)
    assert (replaced["utm_source"], replaced["fbclid"]) == ("facebook", "F-2")
    assert "utm_medium" not in replaced and "utm_campaign" not in replaced
    assert replaced["submission_id"] != kept["submission_id"]  # a new render, a new id

    browser.get(contact + "?days=29")  # the tags were kept 28 days
    expired = hidden_fields(browser)
    assert not any(name.startswith("utm_") or name.endswith("clid") for name in expired)
    assert expired["landing_page"] == contact + "?days=29"
    assert page_errors(browser) == []


# --------------------------------------------------------------------------- one record


@pytest.mark.parametrize("mode", ["plain", "ajax"])
async def test_a_double_click_on_submit_makes_one_lead(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway, mode: str
) -> None:
    gateway = await make_gateway(portal)
    attrs = "data-b24-ajax" if mode == "ajax" else ""
    browser.get(landing.add("/contact", page(gateway, form(gateway, attrs=attrs), head=tracker())))
    ActionChains(browser).double_click(submit_button(browser)).perform()
    if mode == "ajax":
        until(browser, lambda d: shown(d, "[data-b24-success]"))
    else:
        until(browser, thank_you_page(gateway))

    [lead] = await leads(portal)
    assert lead["TRACE"] == STUB_TRACE
    assert await stored_submissions(gateway) == 1
    assert len(portal.records("lead")) == 1
    assert trace_calls(browser, landing) == 1


async def test_a_retry_after_a_lost_answer_is_stored_once(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    # The first answer is lost on the way back (the connection drops after the gateway has
    # stored the submission); embed.js retries with the same submission_id.
    lose_first_answer = """<script>(() => {
      const fetch = window.fetch;
      window.__posts = 0;
      window.fetch = (...args) => fetch(...args).then((answer) => {
        if (window.__posts++ == 0) throw new TypeError('Failed to fetch');
        return answer;
      });
    })();</script>"""
    head = FAST_TIMERS + lose_first_answer + tracker()
    url = landing.add("/contact", page(gateway, form(gateway, attrs="data-b24-ajax"), head=head))
    browser.get(url)
    submit_button(browser).click()
    until(browser, lambda d: shown(d, "[data-b24-success]"))

    assert browser.execute_script("return window.__posts") == 2
    [lead] = await leads(portal)
    assert lead["TRACE"] == STUB_TRACE
    assert await stored_submissions(gateway) == 1


async def test_a_second_submit_while_the_first_is_on_its_way_is_ignored(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    # The tracker is late, so the first submit is still waiting when the second comes; the
    # second bypasses the disabled button (Enter in a field, a script).
    browser.get(
        landing.add(
            "/contact",
            page(gateway, form(gateway, attrs="data-b24-ajax"), head=tracker(delay_ms=500)),
        )
    )
    browser.execute_script(
        "const f = document.forms[0]; f.requestSubmit(); f.requestSubmit(); f.requestSubmit();"
    )
    until(browser, lambda d: shown(d, "[data-b24-success]"))

    [lead] = await leads(portal)
    assert lead["TRACE"] == STUB_TRACE
    assert await stored_submissions(gateway) == 1
    assert trace_calls(browser, landing) == 1


# --------------------------------------------------------------------------- AJAX mode


async def test_an_ajax_form_shows_its_success_message_and_starts_a_new_submission(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    fields = '<input name="name"><input name="phone">'
    url = landing.add(
        "/contact",
        page(gateway, form(gateway, attrs="data-b24-ajax", fields=fields), head=tracker()),
    )
    browser.get(url)
    first_id = hidden_fields(browser)["submission_id"]
    browser.find_element(By.NAME, "name").send_keys("Ann")
    browser.find_element(By.NAME, "phone").send_keys("+49 170 1234567")
    submit_button(browser).click()
    until(browser, lambda d: shown(d, "[data-b24-success]"))

    assert browser.current_url == url  # the page stayed
    assert not shown(browser, "[data-b24-error]")
    assert browser.find_element(By.NAME, "name").get_attribute("value") == ""  # reset
    assert submit_button(browser).is_enabled()
    second_id = hidden_fields(browser)["submission_id"]
    assert second_id and second_id != first_id
    [lead] = await leads(portal)
    assert (lead["NAME"], lead["TRACE"]) == ("Ann", STUB_TRACE)

    # The next submission from the same page is a new one: a second lead, a fresh trace.
    browser.find_element(By.NAME, "name").send_keys("Bob")
    browser.find_element(By.NAME, "phone").send_keys("+49 170 7654321")
    submit_button(browser).click()
    until(browser, lambda d: hidden_fields(d)["submission_id"] != second_id)
    both = await leads(portal, 2)
    assert sorted(r["NAME"] for r in both) == ["Ann", "Bob"]
    assert trace_calls(browser, landing) == 2
    assert page_errors(browser) == []


async def test_with_the_gateway_unreachable_the_error_shows_and_a_later_retry_delivers_once(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    url = landing.add(
        "/contact", page(gateway, form(gateway, attrs="data-b24-ajax"), head=tracker())
    )
    browser.get(url)
    until(browser, lambda d: hidden_fields(d).get("submission_id"))  # embed.js has run
    await asyncio.to_thread(gateway.server.stop)  # connections are refused now

    submit_button(browser).click()
    until(browser, lambda d: shown(d, "[data-b24-error]"))
    assert not submit_button(browser).is_enabled()  # still sending: it retries
    assert portal.records("lead") == []

    await asyncio.to_thread(gateway.server.start)  # the same port: the gateway is back
    until(browser, lambda d: shown(d, "[data-b24-success]"), within=15)
    assert not shown(browser, "[data-b24-error]")
    assert browser.current_url == url  # delivered by fetch, no fallback post
    [lead] = await leads(portal)
    assert lead["TRACE"] == STUB_TRACE
    assert await stored_submissions(gateway) == 1
    assert trace_calls(browser, landing) == 1  # every attempt carried the first trace


async def test_when_fetch_stays_blocked_the_form_falls_back_to_a_normal_post(
    browser: WebDriver, landing: Landing, portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    # The page's Content-Security-Policy lets it load scripts and post forms anywhere, but
    # connect nowhere: every fetch fails as a network error would, however often it is tried.
    url = landing.add(
        "/contact",
        page(gateway, form(gateway, attrs="data-b24-ajax"), head=FAST_TIMERS + tracker()),
        **{"Content-Security-Policy": "connect-src 'none'"},
    )
    browser.get(url)
    submit_button(browser).click()
    until(browser, lambda d: d.current_url == url and shown(d, "[data-b24-error]"))
    until(browser, thank_you_page(gateway))

    [lead] = await leads(portal)
    assert lead["TRACE"] == STUB_TRACE
    assert await stored_submissions(gateway) == 1
    assert trace_calls(browser, landing) == 1


# --------------------------------------------------------------------------- the demo


async def test_the_sandbox_demo_page_sends_its_sample_trace_through_embed_js(
    browser: WebDriver, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(None)  # sandbox: the gateway's own emulator
    browser.get(gateway.url + "/")
    submit_button(browser).click()
    until(browser, lambda d: shown(d, "[data-b24-success]"))

    async def sandbox_leads() -> list[dict[str, Any]]:
        async with gateway.client() as client:
            state = (await client.get("/sandbox/_control/state")).json()
        return list(state["records"]["lead"])

    [lead] = await wait_for(sandbox_leads)
    assert lead["TRACE"] == SAMPLE_TRACE
    assert lead["NAME"] == "Ann Example"


# --------------------------------------------------------------------------- the operator's page

OPERATOR_TOKEN = "browser-operator-token-0123456789abcdef"


async def test_an_operator_finds_a_failed_submission_and_retries_it_from_the_page(
    browser: WebDriver, portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal, ADMIN_TOKEN=OPERATOR_TOKEN)
    store = await gateway.store()
    portal.control("config", {"required_fields": {"lead": ["COMMENTS"]}})
    try:
        async with gateway.client() as client:
            posted = await client.post(
                "/forms/contact", data={"name": "<b>Ann</b>", "phone": "+49 170 1234567"}
            )
        sid = posted.json()["id"]
        await wait_for(lambda: _is(store, sid, "failed"))
    finally:
        portal.control("config", {"required_fields": {}})

    # The browser signs in with the token as the Basic password, as an operator's would.
    browser.get(gateway.url.replace("http://", f"http://operator:{OPERATOR_TOKEN}@") + "/admin")
    browser.find_element(By.LINK_TEXT, "failed 1").click()
    until(browser, lambda d: d.current_url.endswith("/admin?status=failed"))
    browser.find_element(By.CSS_SELECTOR, f'#submissions a[href="/admin/s/{sid}"]').click()
    until(browser, lambda d: d.find_element(By.ID, "status").text == "failed")
    assert '"<b>Ann</b>"' in browser.find_element(By.ID, "fields").text  # text, not markup
    assert "COMMENTS" in browser.find_element(By.ID, "attempts").text  # the portal's answer

    browser.find_element(By.CSS_SELECTOR, "#retry button").click()
    until(browser, lambda d: d.current_url.endswith(f"/admin/s/{sid}?retry=requeued"))
    assert "Requeued" in browser.find_element(By.ID, "notice").text
    assert browser.find_elements(By.CSS_SELECTOR, "#retry button") == []
    [lead] = await leads(portal)
    assert lead["NAME"] == "<b>Ann</b>"
    await wait_for(lambda: _is(store, sid, "delivered"))
    browser.refresh()
    assert browser.find_element(By.ID, "status").text == "delivered"


async def _is(store: Store, sid: str, status: str) -> bool:
    row = await store.get(sid)
    return row is not None and row.status.value == status
