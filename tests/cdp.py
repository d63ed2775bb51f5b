"""Headless Chromium driven over the Chrome DevTools Protocol, through the pipe Chromium opens with
``--remote-debugging-pipe`` (its fds 3 and 4): a page can be clicked and typed into like a user
does, with no browser-automation package. Used by the MLflow UI test."""
from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any

#: JavaScript: the centre of an element in viewport coordinates (what mouse events take), [x, y].
CENTRE = ("(e => {const r = e.getBoundingClientRect(); "
          "return [r.x + r.width / 2, r.y + r.height / 2];})")


class Browser:
    """One headless Chromium with one page. Use as a context manager."""

    def __init__(self, chromium: Path, profile: Path, size: tuple[int, int] = (1600, 1000),
                 timeout: float = 120.0):
        # Per protocol command: a hung browser fails the test, it never hangs it.
        self.timeout = timeout
        profile.mkdir(parents=True, exist_ok=True)
        self.log = profile / "chromium.log"  # a file: an unread pipe would block a chatty browser
        cmd_r, cmd_w = os.pipe()  # Chromium reads commands on its fd 3
        rep_r, rep_w = os.pipe()  # and writes replies and events on its fd 4

        def pipes_on_3_and_4() -> None:
            os.dup2(cmd_r, 3)
            os.dup2(rep_w, 4)

        try:
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(
                    [str(chromium), "--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                     f"--window-size={size[0]},{size[1]}", "--remote-debugging-pipe",
                     "about:blank"],
                    pass_fds=(3, 4), preexec_fn=pipes_on_3_and_4, stdout=subprocess.DEVNULL,
                    stderr=log)
        except BaseException:
            for fd in (cmd_r, cmd_w, rep_r, rep_w):
                os.close(fd)
            raise
        os.close(cmd_r)
        os.close(rep_w)
        self._out = os.fdopen(cmd_w, "wb", buffering=0)
        self._in = os.fdopen(rep_r, "rb", buffering=0)
        self._buf = b""
        self._id = 0
        self._session: str | None = None
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self._session = self.call("Target.attachToTarget", targetId=target,
                                      flatten=True)["sessionId"]
            self.call("Page.enable")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One protocol command; its result (events that arrive meanwhile are dropped)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self._session and not method.startswith("Target."):
            msg["sessionId"] = self._session
        self._out.write(json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + self.timeout
        while True:
            while b"\0" not in self._buf:
                left = end - time.monotonic()
                if left <= 0 or not select.select([self._in], [], [], left)[0]:
                    raise TimeoutError(f"{method}: no answer from chromium in {self.timeout:.0f} s"
                                       f" (log: {self.log})")
                chunk = self._in.read(1 << 16)
                if not chunk:
                    raise RuntimeError(f"{method}: chromium exited: "
                                       + self.log.read_text(errors="replace")[-2000:])
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able values only)."""
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression[:200]}: "
                               f"{r['exceptionDetails'].get('exception', {}).get('description')}")
        return r["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = 60.0) -> Any:
        end = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > end:
                # What the page showed instead, for a failure that happens only on a loaded CI.
                shown = self.js("location.href + '\\n' + document.body.innerText.slice(0, 1500)")
                raise AssertionError(f"{what}: not in the page after {timeout:.0f} s; "
                                     f"the page shows:\n{shown}")
            time.sleep(0.3)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def click(self, element_js: str, what: str, timeout: float = 15.0) -> None:
        """A mouse click at the centre of the element ``element_js`` evaluates to, once the
        element is drawn there (not hidden under another one), as a user's click lands."""
        hit = (f"(e => !!e && (([x, y]) => e.contains(document.elementFromPoint(x, y)))"
               f"({CENTRE}(e)))({element_js})")
        self.wait(hit, what, timeout)
        x, y = self.js(f"{CENTRE}({element_js})")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                      clickCount=1)

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> None:
        shot = self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._out.write(json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self._out, self._in):
            f.close()
