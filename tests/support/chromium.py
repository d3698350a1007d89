"""Headless Chromium for tests: screenshots and the rendered DOM of a page (a URL or an HTML file).

Install on Debian: ``apt-get update && apt-get install -y chromium chromium-driver``. Without
``/usr/bin/chromium`` the tests that need it skip and say so, except under ``CI=true``, where
they fail.

A browser's helper processes may still write to its throw-away profile as it exits, so the profile
is removed ignoring errors (on a busy machine its removal met ``Directory not empty``).
"""

from __future__ import annotations

import base64
import html
import itertools
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("LIFECYCLE_CHROMIUM", "/usr/bin/chromium"))
INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"
TIMEOUT_SECONDS = 90
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
)


def require_chromium() -> None:
    """Skip when Chromium is not installed; under CI it must be, so fail instead."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is not installed; install it with '{INSTALL}'"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " — CI=true, so the browser tests must run")
    pytest.skip(message)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-", ignore_cleanup_errors=True) as profile:
        completed = subprocess.run(
            [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if completed.returncode != 0:
        raise AssertionError(f"chromium exited with {completed.returncode}: {completed.stderr[-2000:]}")
    return completed


def screenshot(url: str, png: Path, size: tuple[int, int] = (1200, 2000)) -> Path:
    """Render ``url`` and save a PNG of the window; returns the PNG's path."""
    _run(f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", "--virtual-time-budget=5000", url)
    if not png.exists() or png.stat().st_size == 0:
        raise AssertionError(f"chromium wrote no screenshot of {url}")
    return png


def dump_dom(url: str) -> str:
    """The page's DOM after it loaded and ran, serialized as HTML."""
    return _run("--dump-dom", "--virtual-time-budget=5000", url).stdout


def inline_cid_images(html: str, images: Mapping[str, bytes], mime: str = "image/png") -> str:
    """``html`` with every ``cid:<id>`` image source replaced by a data: URI of its bytes, so a
    browser shows an email's inline images; an unknown content id raises."""

    def data_uri(match: re.Match[str]) -> str:
        content_id = match.group(1)
        if content_id not in images:
            raise AssertionError(f"the HTML references cid:{content_id}, which is not attached")
        return f'src="data:{mime};base64,{base64.b64encode(images[content_id]).decode()}"'

    return re.sub(r'src="cid:([^"]+)"', data_uri, html)


def page_width(html_file: Path, width: int, *, dark: bool = False) -> tuple[int, str]:
    """Show ``html_file`` in a ``width`` px wide viewport (in the dark color scheme when ``dark``)
    and return the document's scroll width (wider than ``width``: it scrolls sideways) and its
    rendered DOM, whose body carries ``data-background`` (its computed background color).

    Headless Chromium's window is at least 500 px wide, so the page is shown in an iframe of
    ``width`` px inside a probe page, whose one script reads the framed document; the page itself
    stays script-free."""
    probe = html_file.with_name(f"{html_file.stem}.probe{width}.html")
    probe.write_text(
        "<!DOCTYPE html><html><body style='margin:0'>"
        f"<iframe id='page' src='{html_file.name}' style='width:{width}px;height:1200px;border:0'></iframe>"
        "<pre id='out'></pre><script>"
        "document.getElementById('page').onload = function () {"
        " var d = this.contentDocument;"
        " d.body.setAttribute('data-background', getComputedStyle(d.body).backgroundColor);"
        " d.body.setAttribute('data-scroll-width', String(d.documentElement.scrollWidth));"
        " document.getElementById('out').textContent = d.documentElement.outerHTML; };"
        "</script></body></html>"
    )
    args = [
        f"--window-size={max(width, 500) + 40},1400",
        "--allow-file-access-from-files",
        "--dump-dom",
        "--virtual-time-budget=5000",
    ]
    if dark:
        args.insert(0, "--blink-settings=preferredColorScheme=0")
    out = re.search(r"<pre id=\"out\">(.*)</pre>", _run(*args, probe.as_uri()).stdout, re.S)
    dom = html.unescape(out.group(1)) if out else ""
    found = re.search(r'data-scroll-width="(\d+)"', dom)
    if found is None:
        raise AssertionError(f"chromium did not run the width probe of {html_file}")
    return int(found.group(1)), dom


# --- keyboard walks over the DevTools protocol -----------------------------------------------------

KEYS = {
    "Tab": {"key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9},
    "Space": {"key": " ", "code": "Space", "windowsVirtualKeyCode": 32, "text": " "},
    "Enter": {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"},
}


@dataclass(frozen=True)
class Walk:
    """What a keyboard walk saw: the element each Tab reached (its id, else its text) and the text of
    the page it ended on."""

    focused: list[str]
    final_text: str


class _DevTools:
    """One page of a headless Chromium, driven over the DevTools protocol."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv(timeout=TIMEOUT_SECONDS))
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while not any(e.get("method") == event for e in self.events):
            assert time.monotonic() < deadline, f"chromium sent no {event}"
            self.events.append(json.loads(self.socket.recv(timeout=TIMEOUT_SECONDS)))
        self.events.clear()

    def evaluate(self, expression: str) -> Any:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def screenshot(self, png: Path) -> None:
        png.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def press(self, name: str) -> None:
        key = KEYS[name]
        self.call("Input.dispatchKeyEvent", type="keyDown", **key)
        self.call("Input.dispatchKeyEvent", type="keyUp", **{k: v for k, v in key.items() if k != "text"})


def _devtools_port(process: subprocess.Popen[str]) -> int:
    assert process.stderr is not None
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
        if found:
            return int(found.group(1))
        if not line and process.poll() is not None:
            break
    raise AssertionError("chromium did not open its DevTools port")


def keyboard_walk(
    url: str, keys: Sequence[str], *, before: Path, after: Path, size: tuple[int, int] = (800, 1000)
) -> Walk:
    """Open ``url``, screenshot it to ``before``, press ``keys`` (``Tab``, ``Space``, ``Enter``) as a
    keyboard-only visitor would, and screenshot the page it ends on to ``after``. An ``Enter`` waits
    for the page the form it sends leads to."""
    from websockets.sync.client import connect

    with tempfile.TemporaryDirectory(prefix="chromium-profile-", ignore_cleanup_errors=True) as profile:
        process = subprocess.Popen(
            [
                str(CHROMIUM),
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-port=0",
                f"--window-size={size[0]},{size[1]}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            port = _devtools_port(process)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
                pages = [t for t in json.load(answer) if t["type"] == "page"]
            with connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as socket:
                page = _DevTools(socket)
                page.call("Page.enable")
                page.call("Page.navigate", url=url)
                page.wait_for("Page.loadEventFired")
                page.screenshot(before)
                focused = []
                for key in keys:
                    page.press(key)
                    if key == "Tab":
                        focused.append(
                            page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
                        )
                    elif key == "Enter":
                        page.wait_for("Page.loadEventFired")
                page.screenshot(after)
                return Walk(focused, page.evaluate("document.body.innerText"))
        finally:
            process.terminate()
            process.wait(10)
