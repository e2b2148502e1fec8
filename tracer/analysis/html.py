"""``wstrace view``: one self-contained HTML file that shows a trace.

The page is a single file with no network access at all: the script and the style are inlined
from ``html_assets/``, the data is embedded as JSON in a ``<script type="application/json">``
element, and a Content-Security-Policy meta tag allows exactly that script and that style (by
their SHA-256 hashes), no connections, no frames, no forms and no inline event handlers.  It
works from ``file://`` and can be e-mailed.

Everything in a trace came off the wire or out of the traced process, so it is treated as
hostile: the embedded JSON escapes ``<``, ``>`` and ``&`` (so neither ``</script>`` nor
``<!--`` can end or change the data element), U+2028/U+2029 and every non-ASCII character are
``\\u`` escapes, and the script only ever puts trace strings into the page as text nodes.

Extra tabs (``ExtraTab``) let other views — a walkthrough, say — be shown in the same page:
their HTML is written into the document as given, so it must already be escaped; the CSP still
forbids it to run script or load anything.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from tracer.analysis.view_model import build_model
from tracer.export.traceset import TraceSet

DATA_ELEMENT_ID = "wstrace-data"
_ASSETS = "html_assets"
_TAB_ID = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


@dataclass(frozen=True)
class ExtraTab:
    """A named tab of pre-rendered, already escaped HTML (no scripts: the CSP blocks them).

    ``style`` is the tab's own stylesheet, added to the page's (and to the hash the CSP allows).
    """

    id: str
    title: str
    html: str
    style: str = ""

    def __post_init__(self) -> None:
        if not _TAB_ID.match(self.id):
            raise ValueError(f"tab id {self.id!r}: lowercase letters, digits and '-' only")


def _asset(name: str) -> str:
    return files("tracer.analysis").joinpath(_ASSETS, name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """JSON that is inert inside ``<script type="application/json">``.

    ``ensure_ascii`` turns U+2028/U+2029 (and lone surrogates) into ``\\u`` escapes; ``<``,
    ``>`` and ``&`` become ``\\u003c`` etc., so no ``</script>``, ``<!--`` or ``<script``
    sequence can appear.  ``JSON.parse`` reads the same values back.
    """
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _csp_hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def content_security_policy(script: str, style: str) -> str:
    """Nothing from anywhere, except this page's own script and style."""
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {_csp_hash(script)}",
            f"style-src {_csp_hash(style)}",
            "img-src 'none'",
            "connect-src 'none'",
            "font-src 'none'",
            "frame-src 'none'",
            "worker-src 'none'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


def _inline_safe(text: str, tag: str) -> str:
    if f"</{tag}" in text.lower():
        raise ValueError(f"an inlined asset contains </{tag}")
    return text


def render_page(model: dict[str, Any], *, title: str, tabs: list[ExtraTab] | None = None) -> str:
    """The HTML document for a model from :func:`~tracer.analysis.view_model.build_model`."""
    script = _inline_safe(_asset("viewer.js"), "script")
    tabs = tabs or []
    style = _inline_safe(_asset("viewer.css") + "".join(tab.style for tab in tabs), "style")
    model = {**model, "tabs": [{"id": tab.id, "title": tab.title} for tab in tabs]}
    sections = "\n".join(
        f'<section class="extra-tab" id="tab-{tab.id}" hidden>{tab.html}</section>' for tab in tabs
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" '
        f'content="{html.escape(content_security_policy(script, style))}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{style}</style>\n</head>\n<body>\n"
        '<div id="app"><p class="loading">Loading the trace…</p></div>\n'
        f"{sections}\n"
        f'<script type="application/json" id="{DATA_ELEMENT_ID}">{embed_json(model)}</script>\n'
        f"<script>{script}</script>\n</body>\n</html>\n"
    )


def render_view(
    traces: TraceSet,
    *,
    sources: list[str] | None = None,
    title: str = "wstrace view",
    tabs: list[ExtraTab] | None = None,
) -> str:
    """The viewer page for a loaded trace set."""
    return render_page(build_model(traces, sources=sources), title=title, tabs=tabs)


__all__ = ["DATA_ELEMENT_ID", "ExtraTab", "content_security_policy", "embed_json", "render_view"]
