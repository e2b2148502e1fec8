"""``wstrace explain``: course material on WebSocket internals, generated from a real trace.

:func:`explain` turns one connection of a trace into a :class:`Document` of steps (what RFC 6455
/ RFC 9110 say, where the installed code is, how long it took); :func:`to_markdown`,
:func:`to_html_page` and :func:`to_html_fragment` render it; :func:`compare` puts the same
scenario on several implementations side by side.
"""

from __future__ import annotations

from tracer.analysis.explain.build import explain, explain_connection
from tracer.analysis.explain.compare import Run, compare
from tracer.analysis.explain.model import Document, Step
from tracer.analysis.explain.render_html import STYLE, to_html_fragment, to_html_page
from tracer.analysis.explain.render_md import markdown_outline, to_markdown
from tracer.export.traceset import TraceSet


def explain_html_fragment(traces: TraceSet, connection: int = 1) -> str:
    """The walkthrough of one connection as an HTML fragment: a tab of the viewer.

    The fragment is an ``<article class="wstrace-explain">`` with no script and no inline
    handler; :data:`STYLE` is its stylesheet, for the embedding page's ``<style>``.
    """
    return to_html_fragment(explain(traces, connection))


__all__ = [
    "STYLE",
    "Document",
    "Run",
    "Step",
    "compare",
    "explain",
    "explain_connection",
    "explain_html_fragment",
    "markdown_outline",
    "to_html_fragment",
    "to_html_page",
    "to_markdown",
]
