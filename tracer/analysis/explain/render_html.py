"""The walkthrough as HTML: a body fragment (for a tab of the viewer) or a whole page.

Every string goes through ``html.escape``; values from the trace are only ever text content,
never markup or attributes other than escaped text.  The page needs no script and loads
nothing: its Content-Security-Policy allows only its own inline style.
"""

from __future__ import annotations

import html
import re

from tracer.analysis import fmt
from tracer.analysis.escape import neutralise
from tracer.analysis.explain.model import Block, Cell, Document, Para, Pre, Step, Table, Val
from tracer.analysis.explain.render_md import anchor
from tracer.analysis.explain.source import CodeRef

_CODE = re.compile(r"`([^`]+)`")

STYLE = """
.wstrace-explain { font: 15px/1.5 system-ui, sans-serif; max-width: 60rem; margin: auto;
  padding: 1rem; color: #1f2328; }
.wstrace-explain code, .wstrace-explain pre { font: 13px/1.4 ui-monospace, monospace; }
.wstrace-explain code { background: #eff1f3; padding: 0 .2em; border-radius: 3px;
  overflow-wrap: anywhere; }
.wstrace-explain pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; }
.wstrace-explain table { border-collapse: collapse; margin: .5rem 0; }
.wstrace-explain th, .wstrace-explain td { border: 1px solid #d1d9e0; padding: .2rem .5rem;
  vertical-align: top; text-align: left; }
.wstrace-explain .refs { border-left: 4px solid #d1d9e0; padding-left: .8rem; color: #59636e; }
.wstrace-explain .time { font-weight: 600; }
.wstrace-explain .missing { font-style: italic; color: #9a6700; }
.wstrace-explain .lineno { color: #8c959f; user-select: none; }
"""


def prose(text: str) -> str:
    """wstrace's own text: escaped, with `backticks` as <code>."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def value(v: Val) -> str:
    return f"<code>{html.escape(neutralise(v.text))}</code>"


def inline(parts: Cell) -> str:
    if isinstance(parts, (str, Val)):
        parts = [parts]
    return "".join(value(p) if isinstance(p, Val) else prose(p) for p in parts)


def table(t: Table) -> str:
    head = "".join(f"<th>{prose(h)}</th>" for h in t.headers)
    rows = "".join(
        "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in t.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def block(b: Block) -> str:
    if isinstance(b, Para):
        return f"<p>{inline(b.parts)}</p>"
    if isinstance(b, Table):
        return table(b)
    if isinstance(b, Pre):
        body = "\n".join(html.escape(neutralise(line)) for line in b.lines)
        return f"<p><em>{prose(b.caption)}:</em></p><pre>{body}</pre>"
    raise TypeError(b)


def where(ref: CodeRef, with_source: bool) -> str:
    name = value(Val(ref.function))
    if not ref.found:
        return f"<li><strong>Where:</strong> {name} — {html.escape(ref.problem or '')}</li>"
    text = (
        f"<li><strong>Where:</strong> {name} at {value(Val(ref.location))} "
        f"({html.escape(ref.package or '?')})"
    )
    if ref.recorded_note:
        text += f" — {html.escape(ref.recorded_note)}"
    if with_source and ref.source:
        width = max(len(str(n)) for n, _ in ref.source)
        lines = "\n".join(
            f'<span class="lineno">{(str(n) if n else ""):>{width}}</span>  '
            f"{html.escape(neutralise(t))}"
            for n, t in ref.source
        )
        text += f"<pre>{lines}</pre>"
    return text + "</li>"


def step_html(step: Step) -> str:
    parts = [f'<section id="{anchor(step)}">', f"<h2>{step.number}. {prose(step.title)}</h2>"]
    refs = " · ".join(
        f'<a href="{html.escape(r.url)}">{html.escape(r.label)}</a> {html.escape(r.title)}'
        for r in step.refs
    )
    parts.append(f'<p class="refs">{refs}</p>')
    parts.append(f"<p>{inline(step.says)}</p>")
    if step.missing:
        parts.append(f'<p class="missing">{html.escape(step.missing)}</p>')
    if step.duration_ns is not None:
        parts.append(
            f'<p class="time">Time: {html.escape(step.duration_label)} '
            f"{html.escape(fmt.duration(step.duration_ns))}</p>"
        )
    if step.code:
        items = "".join(where(ref, step.show_source) for ref in step.code)
        parts.append(f"<ul>{items}</ul>")
    parts.extend(block(b) for b in step.blocks)
    parts.append("</section>")
    return "\n".join(parts)


def to_html_fragment(doc: Document) -> str:
    """The walkthrough as an ``<article>``: what a viewer embeds as one of its tabs."""
    contents = "".join(f'<li><a href="#{anchor(s)}">{prose(s.title)}</a></li>' for s in doc.steps)
    parts = [
        '<article class="wstrace-explain">',
        f"<h1>{html.escape(neutralise(doc.title))}</h1>",
        *(block(b) for b in doc.intro),
        f"<ol>{contents}</ol>",
        *(step_html(s) for s in doc.steps),
        "</article>",
    ]
    return "\n".join(parts)


def to_html_page(doc: Document) -> str:
    """A self-contained page: no script, nothing loaded from the network."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(neutralise(doc.title))}</title>\n<style>{STYLE}</style>\n"
        f"</head><body>\n{to_html_fragment(doc)}\n</body></html>\n"
    )


__all__ = ["STYLE", "to_html_fragment", "to_html_page"]
