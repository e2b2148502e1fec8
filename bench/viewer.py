"""``python -m bench.viewer`` (``make bench-view``): how big and how fast the HTML viewer is.

A large trace is synthesised from a real one: the demo scenario's committed sample (five
bidders, twenty bids, one refused request) is copied until there are about ``--connections``
connections, each copy with fresh trace and span ids, its own connection ids and client ports,
and start times spread so that connections overlap as they would on a busy server.  Every copy
keeps the real shape: about 25 messages per connection (bids in, every bid broadcast out), the
ASGI chain, the handshake stack, the frames.

The page is written by ``wstrace view``'s own function and loaded from ``file://`` in headless
Chromium (``tests/support/browser.py``).  Printed: the trace and HTML sizes, the Python time to
build the page, and, from the page itself, the time to parse the embedded data, the time from
parsing to the first complete render, and the time to open the waterfall of the largest
connection.  ``--json FILE`` writes the same figures, machine-readable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "traces" / "samples" / "demo-httptools-websockets-sansio.otlp.jsonl"
STRIDE_NS = 3_000_000
"""Start-time offset between copies: copies overlap, like rooms on one busy server."""


def _new_id(copy: int, old: str) -> str:
    return hashlib.sha1(f"{copy}:{old}".encode()).hexdigest()[: len(old)]


def _shift_attrs(attrs: list[dict[str, Any]], copy: int) -> None:
    for item in attrs:
        value = item.get("value", {})
        if item.get("key") == "wstrace.connection.id" and "intValue" in value:
            value["intValue"] = str(int(value["intValue"]) + 1000 * copy)
        elif item.get("key") == "client.port" and "intValue" in value:
            value["intValue"] = str(1024 + (int(value["intValue"]) + copy * 7) % 64000)


def _copy_span(span: dict[str, Any], copy: int) -> dict[str, Any]:
    span = json.loads(json.dumps(span))
    shift = copy * STRIDE_NS
    span["traceId"] = _new_id(copy, span["traceId"])
    span["spanId"] = _new_id(copy, span["spanId"])
    if span.get("parentSpanId"):
        span["parentSpanId"] = _new_id(copy, span["parentSpanId"])
    for key in ("startTimeUnixNano", "endTimeUnixNano"):
        span[key] = str(int(span[key]) + shift)
    for event in span.get("events", []):
        event["timeUnixNano"] = str(int(event["timeUnixNano"]) + shift)
    for link in span.get("links", []):
        link["traceId"] = _new_id(copy, link["traceId"])
        link["spanId"] = _new_id(copy, link["spanId"])
    _shift_attrs(span.get("attributes", []), copy)
    return span


def synthesise(target: Path, connections: int, sample: Path = SAMPLE) -> dict[str, int]:
    """Write a trace of about ``connections`` connections; returns what it holds."""
    requests = [json.loads(line) for line in sample.read_text().splitlines() if line.strip()]
    per_copy = sum(
        1
        for r in requests
        for rs in r["resourceSpans"]
        for ss in rs["scopeSpans"]
        for s in ss["spans"]
        if s["name"] == "ws.connection"
    )
    copies = max(1, -(-connections // per_copy))
    spans = 0
    with target.open("w", encoding="utf-8") as out:
        for copy in range(copies):
            for request in requests:
                for rs in request["resourceSpans"]:
                    batch = [_copy_span(s, copy) for ss in rs["scopeSpans"] for s in ss["spans"]]
                    spans += len(batch)
                    line = {
                        "resourceSpans": [
                            {
                                "resource": rs.get("resource", {}),
                                "scopeSpans": [{"scope": {"name": "wstrace"}, "spans": batch}],
                            }
                        ]
                    }
                    out.write(json.dumps(line, separators=(",", ":")) + "\n")
    return {"connections": copies * per_copy, "spans": spans}


def measure(page: Path) -> dict[str, float]:
    """Load the page in headless Chromium; timings as the page measured them."""
    from tests.support.browser import chromium, console_problems, missing_reason, open_page

    reason = missing_reason()
    if reason is not None:
        raise SystemExit(f"bench.viewer: cannot measure in a browser: {reason}")
    with chromium() as driver:
        started = time.perf_counter()
        open_page(driver, page, timeout=300)
        load_s = time.perf_counter() - started
        timings = driver.execute_script("return window.__wstraceTimings")
        biggest = driver.execute_script(
            "const d = JSON.parse(document.getElementById('wstrace-data').textContent);"
            "let best = 0; d.conns.forEach((c, i) => { if (c.spans.length > "
            "d.conns[best].spans.length) best = i; }); return best;"
        )
        driver.execute_script("document.getElementById('filter-text').value = '';")
        select_ms = driver.execute_script(
            "const t = performance.now();"
            "document.querySelector('.cscroll').scrollTop = arguments[0] * 24;"
            "document.querySelector('.cscroll').dispatchEvent(new Event('scroll'));"
            "const row = document.querySelector('.crow[data-conn=\"' + arguments[0] + '\"]');"
            "row.click(); void document.body.offsetHeight; return performance.now() - t;",
            biggest,
        )
        sort_ms = driver.execute_script(
            "const t = performance.now();"
            "document.querySelector('.crow.head div[data-key=\"hs\"]').click();"
            "void document.body.offsetHeight; return performance.now() - t;"
        )
        problems = console_problems(driver)
    return {
        "parse_ms": timings["parseMs"],
        "first_render_ms": timings["renderMs"],
        "since_navigation_ms": timings["firstRenderMs"],
        "webdriver_load_s": load_s,
        "open_biggest_connection_ms": select_ms,
        "sort_by_handshake_ms": sort_ms,
        "console_problems": len(problems),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.viewer", description=__doc__)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--keep", type=Path, help="also keep the trace and page in this folder")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)

    from tracer.cli import write_view

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        trace = folder / f"viewer-bench-{args.connections}.otlp.jsonl"
        held = synthesise(trace, args.connections)
        started = time.perf_counter()
        page = write_view([trace])
        build_s = time.perf_counter() - started
        figures: dict[str, Any] = {
            **held,
            "trace_mib": trace.stat().st_size / 2**20,
            "html_mib": page.stat().st_size / 2**20,
            "build_s": build_s,
            **measure(page),
        }
    print(
        f"{figures['connections']} connections, {figures['spans']} spans: "
        f"trace {figures['trace_mib']:.1f} MiB → HTML {figures['html_mib']:.1f} MiB "
        f"(built in {figures['build_s']:.1f} s)\n"
        f"headless Chromium: parse {figures['parse_ms']:.0f} ms, first render "
        f"{figures['first_render_ms']:.0f} ms after parsing "
        f"({figures['since_navigation_ms']:.0f} ms from navigation), open the largest "
        f"connection {figures['open_biggest_connection_ms']:.0f} ms, sort by handshake "
        f"{figures['sort_by_handshake_ms']:.0f} ms, console problems: "
        f"{figures['console_problems']}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
