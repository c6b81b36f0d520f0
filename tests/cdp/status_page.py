#!/usr/bin/env python3
"""Drives forkd's status page in a real headless Chromium over the DevTools
protocol: loads it, gives it the token it asks for, finds the workers,
clicks pause and sees the state change without a reload, kills a worker
from outside and sees its restart appear, looks at it on a phone-sized
screen, takes screenshots, and fails on any console error or exception.

    status_page.py URL TOKEN PAUSE_WORKER KILL_WORKER OUT_DIR

Needs `chromium` and Python's `websocket-client` (.ci/run installs both).
Every wait has a deadline; nothing sleeps to synchronise.
"""

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

DEADLINE = 20.0


class Page:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=DEADLINE)
        self.next_id = 0
        self.errors = []

    def send(self, method, **params):
        self.next_id += 1
        mine = self.next_id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == mine:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.note(msg)

    def note(self, msg):
        """Keeps every error the page reports: exceptions, console.error,
        and the browser's own log entries of level error."""
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            self.errors.append("exception: " + json.dumps(p["exceptionDetails"])[:500])
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console.error: " + json.dumps(p.get("args"))[:500])
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append("log: " + p["entry"].get("text", "") + " " + p["entry"].get("url", ""))

    def js(self, expression):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, what, expression):
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            value = self.js(expression)
            if value:
                return value
            # Let events arrive between two looks, without sleeping blind:
            # the page's own events (console, log) are taken meanwhile.
            self.ws.settimeout(0.1)
            try:
                self.note(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                pass
            finally:
                self.ws.settimeout(DEADLINE)
        raise AssertionError(f"timed out waiting for {what}: {expression}")

    def click(self, selector):
        """A real mouse click in the middle of the element."""
        box = self.js(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " if (!e) return null; e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        assert box, f"nothing to click at {selector}"
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def screenshot(self, path):
        data = self.send("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))


def start_browser(profile):
    args = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1100,760", "about:blank",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + DEADLINE
    seen = []
    while time.monotonic() < end:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        m = re.search(r"DevTools listening on (ws://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("chromium did not start: " + "".join(seen))


def page_target(browser_ws):
    port = re.match(r"ws://[^:]+:(\d+)/", browser_ws).group(1)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=DEADLINE) as r:
        targets = json.load(r)
    return next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")


def row(worker, instance=0):
    return f'#workers tr[data-worker="{worker}"][data-instance="{instance}"]'


def cell_text(worker, n, instance=0):
    return f"document.querySelector('{row(worker, instance)} td:nth-child({n})')?.textContent"


def main():
    url, token, pause_worker, kill_worker, out_dir = sys.argv[1:6]
    profile = tempfile.mkdtemp(prefix="forkd-chromium-")
    proc, browser_ws = start_browser(profile)
    try:
        page = Page(page_target(browser_ws))
        for domain in ("Runtime", "Log", "Page"):
            page.send(f"{domain}.enable")
        page.send("Page.navigate", url=url)
        page.wait("the token form", "document.getElementById('token-box')?.classList.contains('shown')")
        page.js(f"document.getElementById('token').value = {json.dumps(token)}")
        page.click("#token-form button")
        page.wait("the workers", f"document.querySelectorAll('{row(kill_worker)}, {row(pause_worker)}').length === 2")
        page.wait("the live stream", "document.getElementById('live').textContent === 'live'")
        page.wait("looping workers", f"{cell_text(pause_worker, 3)} === 'looping'")
        # A mark on this very document: a reload would lose it.
        page.js("window.__forkdMark = 42")

        page.click(f"{row(pause_worker)} button:nth-of-type(1)")
        page.wait("the paused state", f"{cell_text(pause_worker, 3)} === 'paused'")
        assert page.js("window.__forkdMark") == 42, "the page reloaded"

        pid = int(page.js(cell_text(kill_worker, 2)))
        restarts = int(page.js(cell_text(kill_worker, 6)))
        os.kill(pid, signal.SIGKILL)
        page.wait("the restart", f"Number({cell_text(kill_worker, 6)}) === {restarts + 1}"
                  f" && {cell_text(kill_worker, 2)} !== '{pid}'")
        page.wait("the exit in the event log", "document.getElementById('log').textContent.includes('SIGKILL')")
        assert page.js("window.__forkdMark") == 42, "the page reloaded"
        page.wait("the chart's bars", "document.querySelectorAll('#chart rect[fill=\"#cf222e\"]').length >= 1")
        size = page.js("document.documentElement.outerHTML.length")
        page.screenshot(os.path.join(out_dir, "status-page.png"))

        page.send("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
        page.wait("the phone layout", "getComputedStyle(document.querySelector('thead')).display === 'none'")
        overflow = page.js("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow}px wider than a phone"
        page.screenshot(os.path.join(out_dir, "status-page-phone.png"))

        # Whatever is still in flight is looked at too.
        page.js("1")
        assert not page.errors, "errors in the page:\n" + "\n".join(page.errors)
        print(json.dumps({"ok": True, "killed": pid, "html_chars": size}))
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
