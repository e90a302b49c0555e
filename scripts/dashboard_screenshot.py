"""Photograph a run's Custom Scalars tab as the dashboard test sees it (for docs/dashboard.png).

    python scripts/dashboard_screenshot.py runs/<run> docs/dashboard.png [--height 2000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_dashboard import READ_CARDS, Browser, find_browser, start_tensorboard  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--height", type=int, default=2000)
    args = p.parse_args()
    exe = find_browser()
    if exe is None:
        print("gradwire: error: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 2
    tb, url = start_tensorboard(args.run_dir)
    browser = Browser(exe, tempfile.mkdtemp(prefix="gradwire-chromium-"), height=args.height)
    try:
        browser.open(url + "#custom_scalars")
        for _ in range(60):  # until every chart on the page has drawn, or a minute
            cards = browser.evaluate(READ_CARDS) or []
            if cards and all(c["points"] for c in cards if not c["title"].startswith("all_reduce")):
                break
            time.sleep(1)
        time.sleep(2)
        Path(args.out).write_bytes(browser.screenshot())
    finally:
        browser.close()
        tb.terminate()
        tb.wait(timeout=30)
    print(f"{args.out}: {len(cards)} charts")
    return 0


if __name__ == "__main__":
    sys.exit(main())
