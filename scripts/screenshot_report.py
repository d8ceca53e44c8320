"""Screenshot the top of an HTML report (summary tables and the first questions) for the README.

    .venv/bin/python scripts/screenshot_report.py out/demo/report.html --out docs/img/demo_report.png
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/img/demo_report.png"))
    ap.add_argument("--height", type=int, default=2200, help="Pixels from the top of the page to keep.")
    ap.add_argument("--width", type=int, default=1100)
    args = ap.parse_args(argv)
    if not args.report.is_file():
        print(f"{args.report}: no such report (run ./run.sh demo first)", file=sys.stderr)
        return 2
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("headless Chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": args.width, "height": 900}, device_scale_factor=1)
            page.goto(args.report.resolve().as_uri(), wait_until="load")
            height = min(args.height, page.evaluate("document.documentElement.scrollHeight"))
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True,
                            clip={"x": 0, "y": 0, "width": args.width, "height": height})
        finally:
            browser.close()
    print(f"screenshot of {args.report} ({height}px) at {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
