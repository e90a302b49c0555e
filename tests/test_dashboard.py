"""The dashboards as a user sees them: a real run's folder served by TensorBoard, opened in
headless Chromium, the Custom Scalars tab read from the rendered page and photographed.

Chromium is driven over `--remote-debugging-pipe` (the DevTools protocol on fds 3 and 4):
no port to pick, no websocket client to install. The charts live in shadow DOM, so the page is
read with a script that walks shadow roots; `--dump-dom` would not see them.
Set GRADWIRE_DASHBOARD_PNG=docs/dashboard.png to keep the screenshot.
"""
from __future__ import annotations

import base64
import io
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time

import pytest

from tests.runner import env, read_scalars, torchrun
from tests.tiny import tiny
from train.comm.measure.layout import chart_tags, network_layout

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
RUN_COLOUR = (255, 112, 67)  # TensorBoard's colour for the first run

READ_CARDS = r"""(() => {
  const all = (root, acc) => { for (const el of root.querySelectorAll('*')) {
      acc.push(el); if (el.shadowRoot) all(el.shadowRoot, acc); } return acc; };
  return all(document, []).filter(e => /^tf-custom-scalar-(multi-line|margin)-chart-card$/i.test(e.tagName))
    .map(card => {
      const inner = all(card.shadowRoot || card, []);
      const lines = inner.filter(e => e.tagName.toLowerCase() == 'path' && (e.getAttribute('class') || '') == 'line');
      return {title: card.title, kind: card.tagName.toLowerCase(),
              points: lines.map(l => ((l.getAttribute('d') || '').match(/[ML]/g) || []).length),
              matches: inner.filter(e => e.childElementCount == 0 && /^\s*Matches \(\d+\)\s*$/.test(e.textContent))
                            .map(e => +e.textContent.match(/\d+/)[0])};
    }); })()"""


def find_browser() -> str | None:
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


class Browser:
    """Headless Chromium over the DevTools pipe: JSON messages, each ended by a NUL byte."""

    def __init__(self, exe: str, profile, width: int = 1400, height: int = 2000):
        to_chrome, self._to = os.pipe()
        self._from, from_chrome = os.pipe()
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
                "--remote-debugging-pipe", f"--user-data-dir={profile}", f"--window-size={width},{height}",
                "about:blank"]
        # The shell puts our pipe ends on fds 3 and 4, where Chromium expects them.
        self.proc = subprocess.Popen(["bash", "-c", f'exec 3<&{to_chrome} 4>&{from_chrome}; exec "$0" "$@"', *args],
                                     pass_fds=(to_chrome, from_chrome), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(to_chrome)
        os.close(from_chrome)
        self._buf, self._id, self.session = b"", 0, None

    def send(self, method: str, params: dict | None = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if self.session and not method.startswith(("Target.", "Browser.")):
            msg["sessionId"] = self.session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self._buf:
                chunk = os.read(self._from, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the DevTools pipe")
                self._buf += chunk
            raw, self._buf = self._buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": url})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def evaluate(self, expression: str):
        return self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, OSError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to)
        os.close(self._from)


def start_tensorboard(logdir) -> tuple[subprocess.Popen, str]:
    """TensorBoard on a port the OS picks; its URL read from the line it prints."""
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                             "--port", "0", "--load_fast=false"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env())
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if " at http://" in line:
            return proc, line.split(" at ", 1)[1].split()[0]
    proc.kill()
    raise AssertionError("TensorBoard did not print its URL")


def run_colour_pixels(png: bytes) -> int:
    from PIL import Image
    img = Image.open(io.BytesIO(png)).convert("RGB")
    body = img.crop((0, 80, img.width, img.height))  # below TensorBoard's own orange header
    return sum(n for n, c in body.getcolors(1 << 20)
               if all(abs(a - b) <= 12 for a, b in zip(c, RUN_COLOUR)))


def has_strategies() -> bool:
    from train.distributed import DistConfig
    return "strategy" in DistConfig.__dataclass_fields__


@pytest.mark.skipif(find_browser() is None, reason="Chromium is not installed (apt-get install chromium; .ci/run does)")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_custom_scalars_tab_draws_one_series_per_chart_with_data(tmp_path, strategy):
    if strategy != "ddp" and not has_strategies():
        pytest.skip("dist.strategy (FSDP) is not in this build yet")
    run_dir = tmp_path / "run"
    extra = ("dist.bucket_cap_mb=0.05",) if strategy == "ddp" else (f"dist.strategy={strategy}",)
    done = torchrun(["-m", "train", "--recipe", "mlp", "--run-dir", str(run_dir),
                     *tiny("mlp", *extra, "train.eval_every=3", steps=8)])
    assert done.returncode == 0, done.stderr[-3000:]
    written = set(read_scalars(run_dir))
    layout = network_layout(strategy, 2, measured=True, unit="samples", eval_loss=True, mfu=False)
    tags = chart_tags(layout)

    tb, url = start_tensorboard(run_dir)
    browser = Browser(find_browser(), tmp_path / "profile")
    try:
        browser.open(url + "#custom_scalars")
        expect_data = {title for title, t in tags.items() if set(t) <= written}
        deadline, cards = time.monotonic() + 90, []
        while time.monotonic() < deadline:  # TensorBoard fetches each chart's data on its own
            cards = browser.evaluate(READ_CARDS) or []
            drawn = {c["title"] for c in cards if any(p >= 2 for p in c["points"])}
            if cards and expect_data <= drawn:
                break
            time.sleep(1)
        png = browser.screenshot()
    finally:
        browser.close()
        tb.terminate()
        tb.wait(timeout=30)
    (tmp_path / "dashboard.png").write_bytes(png)
    if os.environ.get("GRADWIRE_DASHBOARD_PNG"):
        with open(os.environ["GRADWIRE_DASHBOARD_PNG"], "wb") as f:
            f.write(png)

    by_title = {c["title"]: c for c in cards}
    assert set(by_title) == set(tags), "the tab shows exactly the layout's charts"
    must = {"exposed comm (ms per step)", "wire bytes / ring expectation (ratio)", "train loss", "eval loss"}
    must |= {"busbw (Gbit/s)"} if strategy == "ddp" else {"all_gather busbw (Gbit/s)", "reduce_scatter busbw (Gbit/s)"}
    assert must <= expect_data, must - expect_data  # the run wrote the figures these charts draw
    for title in expect_data:
        assert any(p >= 2 for p in by_title[title]["points"]), f"{title!r}: no line drawn"
    for c in cards:
        if c["kind"].endswith("multi-line-chart-card"):
            # One tag per chart: TensorBoard colours by run, so a second tag would be a twin line.
            assert c["matches"] and max(c["matches"]) <= 1, (c["title"], c["matches"])
    assert run_colour_pixels(png) > 2000  # the lines are really on the picture, in the run's colour
