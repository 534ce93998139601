"""The web console, driven end to end in headless Chromium against a live server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import REPO_ROOT, require

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    HAVE_SELENIUM = True
except ImportError:  # pragma: no cover - reported by require() in the fixture
    HAVE_SELENIUM = False

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = REPO_ROOT / "tests" / "artifacts" / "console.png"
WAIT = 60  # seconds; embedding runs on CPU
INGEST_WAIT = 180  # the first upload may also load the embedding model

REPLICATION = (
    "# Storage\n\nEach shard has three replicas on different nodes. "
    "The replicas apply one shared write-ahead log."
)
# Untrusted content: must show as text, never become markup.
CAFETERIA = (
    "The cafeteria opens at noon and serves quokka pie on Fridays. "
    "<img src=x onerror=\"document.title='pwned'\"> <b>sharp</b>"
)
DROPPED = "cafeteria notes.txt"  # a space: the doc id is URL-encoded per path segment

# Drop files on an element as a user would: dragenter, dragover, drop with a DataTransfer of
# [name, text, type] files. Returns, per event, whether the page accepted it (cancelled it).
DROP_FILES_JS = """
const [selector, files] = arguments;
const zone = document.querySelector(selector);
const data = new DataTransfer();
for (const [name, content, type] of files) data.items.add(new File([content], name, {type}));
return ['dragenter', 'dragover', 'drop'].map((kind) => !zone.dispatchEvent(
  new DragEvent(kind, {bubbles: true, cancelable: true, dataTransfer: data})));
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """Headless Chromium through the system chromedriver (selenium-manager never downloads)."""
    require(HAVE_SELENIUM, "selenium is not installed (pip install 'selenium>=4.20,<5')")
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)")
    require(CHROMEDRIVER.exists(), f"{CHROMEDRIVER} is missing (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


def issue_key(server: Any, role: str) -> str:
    """Create tenant ``acme`` if needed (root key) and return a new key with ``role``."""
    auth = {"Authorization": f"Bearer {server.admin_key}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
        created = client.post("/v1/tenants", json={"id": "acme", "name": "Acme"})
        assert created.status_code in (201, 409), created.text
        issued = client.post("/v1/tenants/acme/keys", json={"role": role})
        assert issued.status_code == 201, issued.text
        key: str = issued.json()["key"]
        return key


def wait(driver: WebDriver, timeout: float = WAIT) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, timeout)


def visible(driver: WebDriver, css: str, timeout: float = WAIT) -> WebElement:
    """The element matching ``css`` once it is displayed."""
    element: WebElement = wait(driver, timeout).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, css))
    )
    return element


def sign_in(driver: WebDriver, key: str) -> None:
    field = visible(driver, "#api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "signin-button").click()


def sign_out(driver: WebDriver) -> None:
    driver.find_element(By.ID, "signout-button").click()
    visible(driver, "#signin-section")


def script_errors(driver: webdriver.Chrome) -> list[str]:
    """Severe browser-console entries other than failed requests (API errors are expected)."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "Failed to load resource" not in entry["message"]
    ]


def test_console_uploads_searches_and_cites(
    live_server: Any, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """A writer uploads by file picker and by drag and drop, searches, asks, follows a citation."""
    key = issue_key(live_server, "writer")
    browser.get(f"{live_server.url}/")
    sign_in(browser, key)
    assert visible(browser, "#session-tenant").text == "acme"
    assert browser.find_element(By.ID, "session-role").text == "writer"

    # Upload one file through the hidden file input, readable by the group ops only; drop two
    # more on the drop zone, for every key.
    markdown = tmp_path / "replication.md"
    markdown.write_text(REPLICATION, encoding="utf-8")
    groups = browser.find_element(By.ID, "upload-acl")
    groups.send_keys("ops")
    browser.find_element(By.ID, "file-input").send_keys(str(markdown))
    groups.clear()
    dropped = [[DROPPED, CAFETERIA, "text/plain"], ["diagram.png", "not a picture", "image/png"]]
    accepted = browser.execute_script(DROP_FILES_JS, "#dropzone", dropped)
    assert accepted == [True, True, True]

    for name in ("replication.md", DROPPED):
        upload = visible(browser, f'li.upload[data-file-name="{name}"][data-status="done"]')
        assert upload.find_element(By.TAG_NAME, "progress").get_property("value") == 100
        visible(
            browser, f'#documents-body tr[data-doc-id="{name}"][data-state="live"]', INGEST_WAIT
        )
        # The upload row follows its version in the background until it is live.
        status = (By.CSS_SELECTOR, f'li.upload[data-file-name="{name}"] .upload-status')
        wait(browser).until(ec.text_to_be_present_in_element(status, "live"))
    rejected = visible(browser, 'li.upload[data-file-name="diagram.png"][data-status="error"]')
    assert (
        "unsupported_format" in rejected.find_element(By.CSS_SELECTOR, ".upload-status.error").text
    )
    row = browser.find_element(By.CSS_SELECTOR, '#documents-body tr[data-doc-id="replication.md"]')
    assert row.find_element(By.CSS_SELECTOR, ".badge-live").text == "live"
    assert row.find_element(By.CSS_SELECTOR, ".doc-acl").text == "groups: ops"
    dropped_row = browser.find_element(
        By.CSS_SELECTOR, f'#documents-body tr[data-doc-id="{DROPPED}"]'
    )
    assert not dropped_row.find_elements(By.CSS_SELECTOR, ".doc-acl")

    # Search: the passage of the expected document appears, untrusted markup shown as text.
    browser.find_element(By.ID, "search-query").send_keys("quokka pie cafeteria")
    browser.find_element(By.ID, "search-button").click()
    hit = visible(browser, f'#search-results .passage[data-doc-id="{DROPPED}"]')
    assert hit.get_attribute("data-chunk-index") == "0"
    assert "quokka pie" in hit.text and "<b>sharp</b>" in hit.text
    assert not browser.find_elements(By.CSS_SELECTOR, "#search-results img, #search-results b")
    assert browser.title != "pwned"

    # Ask: the answer cites its source; clicking the citation highlights the cited passage.
    browser.find_element(By.ID, "ask-question").send_keys("how many replicas does a shard have?")
    browser.find_element(By.ID, "ask-button").click()
    citation = visible(browser, "#answer-text button.citation")
    # The answer came as a stream and says what it is (no language model here).
    assert browser.find_element(By.ID, "answer-kind").text.startswith("Extractive answer")
    assert browser.find_element(By.ID, "answer").get_attribute("aria-busy") is None
    number = citation.get_attribute("data-citation")
    source = browser.find_element(By.CSS_SELECTOR, f'#sources .passage[data-citation="{number}"]')
    assert source.get_attribute("data-doc-id") == "replication.md"
    assert "three replicas" in source.text
    assert "highlighted" not in (source.get_attribute("class") or "")
    citation.click()
    wait(browser).until(lambda _: "highlighted" in (source.get_attribute("class") or ""))
    # The highlight is visible: the card turns yellow once its transition ends.
    wait(browser).until(
        lambda _: source.value_of_css_property("background-color") == "rgba(255, 243, 163, 1)"
    )
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.exists() and SCREENSHOT.stat().st_size > 0, SCREENSHOT

    # The passages of an answer are searched in the mode chosen (the request says it; the api
    # tests show the mode reaches the search): by keywords, a question sharing no word with
    # any document finds none, and the answer says so.
    browser.execute_script(
        "window.sentBodies = []; const send = window.fetch;"
        "window.fetch = (url, options) => {"
        "  window.sentBodies.push(String(url) + ' ' + ((options && options.body) || ''));"
        "  return send(url, options); };"
    )
    Select(browser.find_element(By.ID, "ask-mode")).select_by_value("keyword")
    question = browser.find_element(By.ID, "ask-question")
    question.clear()
    question.send_keys("zxqv wumpus?")
    browser.find_element(By.ID, "ask-button").click()
    wait(browser).until(
        lambda _: "do not contain an answer" in browser.find_element(By.ID, "answer-text").text
    )
    assert browser.find_element(By.ID, "sources-title").get_attribute("hidden") is not None
    sent = browser.execute_script("return window.sentBodies")
    asked = [json.loads(body.split(" ", 1)[1]) for body in sent if "/answer " in body]
    assert [(a["question"], a["mode"], a["stream"]) for a in asked] == [
        ("zxqv wumpus?", "keyword", True)
    ]

    # Delete (two clicks: Delete, then Confirm delete); the row goes away.
    selector = f'#documents-body tr[data-doc-id="{DROPPED}"]'
    button = browser.find_element(By.CSS_SELECTOR, f"{selector} .delete-button")
    button.click()
    wait(browser).until(lambda _: button.text == "Confirm delete")
    button.click()
    wait(browser).until(lambda driver: not driver.find_elements(By.CSS_SELECTOR, selector))
    visible(browser, '#documents-body tr[data-doc-id="replication.md"]')
    assert script_errors(browser) == []


def test_console_shows_the_api_error_for_a_bad_key(live_server: Any, browser: WebDriver) -> None:
    """A rejected key leaves the user signed out, with the API's error code and message shown."""
    browser.get(f"{live_server.url}/")
    sign_in(browser, "not-a-real-key")
    alert = visible(browser, "#alert.error")
    assert "unauthorized" in alert.text
    assert browser.find_element(By.ID, "signin-section").is_displayed()
    assert not browser.find_element(By.ID, "session").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0


def test_console_limits_readers_and_root_keys(live_server: Any, browser: WebDriver) -> None:
    """Readers get no upload or delete controls; a root key is told to use a tenant key."""
    reader = issue_key(live_server, "reader")
    browser.get(f"{live_server.url}/")
    sign_in(browser, reader)
    visible(browser, "#documents-section")
    assert browser.find_element(By.ID, "session-role").text == "reader"
    assert not browser.find_element(By.ID, "upload-section").is_displayed()
    assert not browser.find_element(By.CSS_SELECTOR, "#documents-table th.actions").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, ".delete-button")

    # The key survives a reload (sessionStorage) until the user signs out.
    browser.refresh()
    visible(browser, "#documents-section")
    sign_out(browser)
    assert browser.execute_script("return sessionStorage.length") == 0

    sign_in(browser, live_server.admin_key)
    assert "tenant" in visible(browser, "#root-notice").text
    assert not browser.find_element(By.ID, "workspace").is_displayed()
    assert browser.find_element(By.ID, "session-role").text == "root"


ADMIN_SCREENSHOT = REPO_ROOT / "tests" / "artifacts" / "console-admin-400px.png"


def test_console_root_and_tenant_admins_manage_tenants_keys_and_read_the_audit(
    live_server: Any, browser: WebDriver
) -> None:
    """The root key creates a tenant and a key with access groups from the console; the new
    key signs in; a tenant admin sees its keys and audit log and revokes a key; at 400 px."""
    browser.set_window_size(400, 1800)
    browser.get(f"{live_server.url}/")
    sign_in(browser, live_server.admin_key)
    visible(browser, "#admin-section")
    browser.find_element(By.ID, "tenant-id").send_keys("console-corp")
    browser.find_element(By.ID, "tenant-create").click()
    wait(browser).until(
        lambda d: d.find_element(By.ID, "admin-tenant").get_property("value") == "console-corp"
    )
    browser.find_element(By.ID, "key-groups").send_keys("hr, legal")
    browser.find_element(By.ID, "key-create").click()
    new_key = visible(browser, "#new-key")
    wait(browser).until(lambda _: new_key.text.startswith("srk_"))
    reader_key = new_key.text
    row = visible(browser, "#keys-body tr")
    assert row.find_element(By.CSS_SELECTOR, ".key-groups").text == "hr, legal"
    visible(browser, '#audit-body tr[data-action="key.create"]')

    # An admin key of the tenant, made here too, then used to sign in.
    browser.find_element(By.CSS_SELECTOR, '#key-role option[value="admin"]').click()
    browser.find_element(By.ID, "key-create").click()
    wait(browser).until(lambda _: new_key.text != reader_key and new_key.text.startswith("srk_"))
    admin_key = new_key.text
    sign_out(browser)
    assert not browser.find_element(By.ID, "new-key-box").is_displayed()

    sign_in(browser, admin_key)
    visible(browser, "#workspace")
    visible(browser, "#admin-section")
    assert not browser.find_element(By.ID, "tenants-admin").is_displayed()
    rows = wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#keys-body tr") or False)
    assert len(rows) == 2
    reader_row = next(
        r for r in rows if r.find_element(By.CSS_SELECTOR, ".key-groups").text != "all"
    )
    reader_row.find_element(By.CSS_SELECTOR, ".revoke-button").click()
    keys_text = "return document.querySelector('#keys-body').textContent"
    wait(browser).until(lambda d: "revoked" in d.execute_script(keys_text))
    # Search and ask come before the document list.
    order = browser.execute_script(
        "return [...document.querySelectorAll('#workspace > section')].map(s => s.id)"
    )
    assert order.index("search-section") < order.index("documents-section")
    assert order.index("ask-section") < order.index("documents-section")
    # Usable at 400 px: nothing wider than the window.
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 400, width
    ADMIN_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(ADMIN_SCREENSHOT))
    assert script_errors(browser) == []
    revoked = httpx.get(
        f"{live_server.url}/v1/whoami", headers={"Authorization": f"Bearer {reader_key}"}
    )
    assert revoked.status_code == 401
