"""``python -m bench.screenshot OUT.png`` (``make screenshots``): the README's picture of the
viewer, taken from a real run rather than drawn.

Runs the demo scenario (the auction: five bidders, twenty bids, one refused request) on
httptools × websockets-sansio, writes the page with ``wstrace view``'s own function, opens it in
headless Chromium, selects the second bidder's connection and its first bid, opens the first
layers of the ASGI chain, and saves a PNG of the window.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.screenshot", description=__doc__)
    parser.add_argument("output", type=Path, help="the PNG to write, e.g. docs/view.png")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args(argv)

    from tests.support.browser import chromium, console_problems, missing_reason, open_page
    from tracer.cli import write_view
    from tracer.demo import Script, run_demo

    reason = missing_reason()
    if reason is not None:
        raise SystemExit(f"bench.screenshot: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        trace, _ = run_demo(
            http="httptools",
            ws="websockets-sansio",
            script=Script(clients=5, bids=20),
            shape="connection",
            frames="spans",
            out_dir=Path(tmp),
            step=lambda _: None,
        )
        page = write_view([trace])
        with chromium(args.width, args.height) as driver:
            open_page(driver, page)
            run = driver.execute_script
            run("document.querySelector('.crow[data-conn=\"1\"]').click()")
            chain = '#waterfall .wf-row[data-chain="1"] .tw'
            for _ in range(3):
                run(f"document.querySelector('{chain}').click()")
            run(
                "document.querySelector('#waterfall .wf-row[data-name=\"ws.message.receive\"]')"
                ".click()"
            )
            problems = console_problems(driver)
            if problems:
                raise SystemExit(f"bench.screenshot: console problems: {problems}")
            args.output.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.output))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
