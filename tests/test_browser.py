"""The demo in a real browser (Debian's Chromium driven by Playwright): spawn page, Jupyter through the
tunnel, cancel, inert event payloads; and the demo command itself.

Screenshots for the docs are written when FBS_SCREENSHOTS names a directory.
"""

import asyncio
import os
import re
import sys
import time
import uuid

import aiohttp
import pytest

from tests.demorun import PASSWORDS, demo_processes, start_demo, stop_demo
from tests.hubharness import REPO

pytestmark = pytest.mark.slow
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = os.environ.get("FBS_SCREENSHOTS", "")


@pytest.fixture(scope="module")
async def demo():
    proc, url, directory = await start_demo()
    yield url, directory
    code, _ = await stop_demo(proc)
    assert code == 0
    assert demo_processes(directory) == [], "the demo left processes behind"


@pytest.fixture(scope="module")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def logged_in_page(browser, url, user):
    context = await browser.new_context(viewport={"width": 1100, "height": 750})
    page = await context.new_page()
    await page.goto(f"{url}/hub/login")
    await page.fill("#username_input", user)
    await page.fill("#password_input", PASSWORDS[url])
    if SHOTS and user == "alice":
        await page.screenshot(path=os.path.join(SHOTS, "login.png"))
    await page.click("#login_submit")
    await page.wait_for_url(re.compile(r".*/hub/(spawn|home).*"))
    return page


async def api(page, method, path, body=None):
    """Call the Hub API from the page, as the Hub's own JavaScript does (cookie + XSRF token)."""
    if "/hub/" not in page.url:
        await page.goto(page.url.split("/user/")[0] + "/hub/home")
    return await page.evaluate(
        """async ([method, path, body]) => {
            const r = await fetch("/hub/api" + path, {method, body: body ? JSON.stringify(body) : undefined,
                headers: {"X-XSRFToken": window.jhdata.xsrf_token, "Content-Type": "application/json"}});
            const text = await r.text();
            return {status: r.status, body: text ? JSON.parse(text) : null};
        }""",
        [method, path, body],
    )


async def start_from_form(page, url, slow=False):
    await page.goto(f"{url}/hub/spawn")
    if slow:
        await page.check("input[name=slow]")
    await page.click("input[type=submit], button[type=submit]")
    await page.wait_for_selector("#progress-log", state="attached")


async def log_messages(page):
    return await page.locator("#progress-log .progress-log-event").all_text_contents()


# first in this module: no other demo runs yet, so every proxy or server process found is this one's
async def test_demo_command_answers_and_exits_cleanly_on_sigint():
    proc, url, directory = await start_demo()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/hub/login") as r:
                assert r.status == 200
        assert demo_processes(directory), "the demo's Hub and sshd run from its directory"
    finally:
        code, out = await stop_demo(proc)
    assert code == 0 and "Stopped." in out
    assert demo_processes(directory) == []
    # the password is this run's, not a public one
    assert PASSWORDS[url] != "demo" and len(PASSWORDS[url]) >= 16


async def test_ctrl_c_with_a_server_running_stops_everything(browser):
    proc, url, directory = await start_demo()
    try:
        page = await logged_in_page(browser, url, "ctrlc")
        await start_from_form(page, url)
        await page.wait_for_url(re.compile(r".*/user/ctrlc/lab.*"), timeout=90000)
        running = demo_processes(directory)
        assert any("jupyterhub-singleuser" in p.cmdline for p in running)
        await page.context.close()
    finally:
        code, out = await stop_demo(proc)  # the server is still running
    assert code == 0, out
    # the Hub, the proxy, the sshd, the remote start script's supervisor and the Jupyter server
    assert demo_processes(directory) == [], out


async def test_demo_refuses_root_without_allow_root_and_warns_on_a_public_ip(tmp_path):
    """As root (CI), the demo exits with a reason; as anyone, a non-loopback --ip is warned about.
    Run without starting anything further: the root check comes first, the warning before the Hub."""
    from forwardbasespawner.demo import __main__ as demo_main

    if os.getuid() == 0:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "forwardbasespawner.demo", "--port", "0",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await asyncio.wait_for(proc.communicate(), 60))[0].decode()
        assert proc.returncode != 0 and "--allow-root" in out
    config = demo_main.hub_config(str(tmp_path), "127.0.0.1", 1, _FakeSSHD(), "chp", "pw-123", allow_root=False)
    assert "--allow-root" not in config and "pw-123" in config and "'demo'" not in config
    # --allow-root reaches jupyterhub-singleuser only where it is needed: when the demo runs as root
    allowed = demo_main.hub_config(str(tmp_path), "127.0.0.1", 1, _FakeSSHD(), "chp", "p", allow_root=True)
    assert ("--allow-root" in allowed) == (os.getuid() == 0)
    assert demo_main.new_password() != demo_main.new_password()
    assert demo_main.is_loopback("127.0.0.1") and demo_main.is_loopback("::1") and not demo_main.is_loopback("0.0.0.0")


class _FakeSSHD:
    port = 22
    user = "u"
    client_key = "/k"
    known_hosts = "/kh"


async def test_spawn_shows_progress_and_jupyter_answers_through_the_tunnel(demo, browser):
    url, directory = demo
    page = await logged_in_page(browser, url, "alice")
    await start_from_form(page, url)
    if SHOTS:
        await page.wait_for_function("document.querySelectorAll('#progress-log .progress-log-event').length >= 2")
        await page.click("#progress-details summary")
        await page.screenshot(path=os.path.join(SHOTS, "spawn-progress.png"))
    await page.wait_for_url(re.compile(r".*/user/alice/lab.*"), timeout=90000)
    await page.wait_for_selector("#jp-main-dock-panel, .jp-LabShell", timeout=60000)
    if SHOTS:
        await page.wait_for_selector(".jp-Launcher", timeout=60000)
        await page.screenshot(path=os.path.join(SHOTS, "jupyterlab.png"))
    # the progress messages of the remote start script arrived, in order (read from the Hub's log of them)
    reply = await api(page, "GET", "/users/progress/events/alice")
    messages = [e["message"][25:] for e in reply["body"]["events"]]
    wanted = ["Preparing the server", "Starting the Jupyter server", "Jupyter server listening", "Connected"]
    positions = [next(i for i, m in enumerate(messages) if m.startswith(w)) for w in wanted]
    assert positions == sorted(positions), messages
    assert (await api(page, "GET", "/user"))["body"]["servers"][""]["ready"]
    await api(page, "DELETE", "/users/alice/server")
    await page.context.close()


async def test_kernel_runs_code_over_the_tunnel(demo, browser):
    url, _ = demo
    page = await logged_in_page(browser, url, "carol")
    reply = await api(page, "POST", "/users/carol/server", {})
    assert reply["status"] in (201, 202)
    token = (await api(page, "POST", "/users/carol/tokens", {"note": "kernel test", "expires_in": 600}))["body"]["token"]
    headers = {"Authorization": f"token {token}"}
    base = f"{url}/user/carol/api"
    async with aiohttp.ClientSession() as session:
        for _ in range(900):
            async with session.get(f"{base}/status", headers=headers) as r:
                if r.status == 200:
                    break
            await asyncio.sleep(0.1)
        async with session.get(f"{base}/kernelspecs", headers=headers) as r:
            assert r.status == 200 and "python3" in (await r.json())["kernelspecs"]
        body = {"path": "tunnel.ipynb", "type": "notebook", "name": "tunnel.ipynb", "kernel": {"name": "python3"}}
        async with session.post(f"{base}/sessions", headers=headers, json=body) as r:
            assert r.status == 201
            created = await r.json()
        kernel = created["kernel"]["id"]
        ws_url = f"{url.replace('http', 'ws')}/user/carol/api/kernels/{kernel}/channels"
        result = None
        async with session.ws_connect(ws_url, headers=headers) as ws:
            msg_id = uuid.uuid4().hex
            await ws.send_json({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "carol",
                           "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": "1+1", "silent": False, "store_history": False, "user_expressions": {},
                            "allow_stdin": False, "stop_on_error": True},
            })  # fmt: skip
            deadline = time.monotonic() + 60
            while result is None and time.monotonic() < deadline:
                message = await ws.receive_json(timeout=60)
                if message.get("parent_header", {}).get("msg_id") == msg_id and message["msg_type"] == "execute_result":
                    result = message["content"]["data"]["text/plain"]
        assert result == "2"
        async with session.delete(f"{base}/sessions/{created['id']}", headers=headers) as r:
            assert r.status == 204
    await api(page, "DELETE", "/users/carol/server")
    await page.context.close()


async def test_cancel_a_slow_start_from_the_spawn_page(demo, browser):
    url, directory = demo
    page = await logged_in_page(browser, url, "bob")
    if not has_stop_button():
        pytest.skip("this JupyterHub's spawn page has no stop button (JupyterHub 6 added it)")
    await start_from_form(page, url, slow=True)
    await page.wait_for_function(
        "[...document.querySelectorAll('#progress-log .progress-log-event')].some(e => e.textContent.includes('slow start'))",
        timeout=60000,
    )
    await page.click("#stop-server-btn")
    # the page says so at once (the stop itself takes JupyterHub's 1 s grace and our remote stop)
    await page.wait_for_function(
        """() => /stop/i.test((document.querySelector('#stop-server-status') || {}).textContent || '')
              || /cancel|stopped|failed/i.test((document.querySelector('#progress-message') || {}).textContent || '')
              || !location.pathname.includes('spawn-pending')""",
        timeout=30000,
    )
    if SHOTS:
        await page.screenshot(path=os.path.join(SHOTS, "cancelled.png"))
    hub_page = await page.context.new_page()  # the spawn page reloads itself after the stop
    await hub_page.goto(f"{url}/hub/home")
    for _ in range(300):
        servers = (await api(hub_page, "GET", "/user"))["body"]["servers"]
        if not servers:
            break
        await asyncio.sleep(0.1)
    assert servers == {}
    events = (await api(hub_page, "GET", "/users/progress/events/bob"))["body"]["events"]
    assert events[-1]["failed"] and "Start cancelled." in events[-1]["message"], events
    # nothing of bob's start is left on the remote host
    for _ in range(100):
        if not demo_processes(directory):
            break
        await asyncio.sleep(0.1)
    assert [p for p in demo_processes(directory) if "remote_start" in p.cmdline] == []
    await page.context.close()


def has_stop_button():
    template = os.path.join(sys.prefix, "share", "jupyterhub", "templates", "spawn_pending.html")
    return os.path.exists(template) and "stop-server-btn" in open(template).read()


async def test_event_payloads_are_inert_on_the_spawn_page(demo, browser):
    url, _ = demo
    page = await logged_in_page(browser, url, "admin")
    await start_from_form(page, url, slow=True)
    await page.wait_for_function("document.querySelectorAll('#progress-log .progress-log-event').length >= 2", timeout=60000)
    payloads = [
        {"message": "<img src=x onerror=\"window.pwned='message'\">", "progress": 30},
        {"html_message": "<img src=x onerror=\"window.pwned='html'\"><b>bold is fine</b>", "progress": 31},
        {"html_message": "<script>window.pwned='script'</script>", "progress": 32},
        {"html_message": '<a href="javascript:window.pwned=\'link\'" id="evil">click</a>', "progress": 33},
    ]
    for body in payloads:
        reply = await api(page, "POST", "/users/progress/events/admin", body)
        assert reply["status"] == 204, reply
    await page.wait_for_function(
        "[...document.querySelectorAll('#progress-log .progress-log-event')].some(e => e.textContent.includes('click'))"
    )
    if await page.locator("#evil").count():
        await page.click("#evil")
    assert await page.evaluate("() => window.pwned") is None
    log_html = await page.locator("#progress-log").inner_html()
    assert "<img" not in log_html and "<script" not in log_html and "javascript:" not in log_html
    assert "<b>bold is fine</b>" in log_html
    await api(page, "DELETE", "/users/admin/server")
    await page.context.close()
