"""The walkthrough as GitHub-flavoured Markdown.

Values from the trace are untrusted: each becomes an inline code span whose fence is longer than
any run of backticks inside it, with control and bidi characters made visible and, inside
tables, pipes escaped — so a recorded header or close reason can neither inject Markdown or HTML
nor break a table.  Preformatted blocks get a fence longer than any inside them.
"""

from __future__ import annotations

import re

from tracer.analysis import fmt
from tracer.analysis.escape import neutralise
from tracer.analysis.explain.model import Block, Cell, Document, Para, Pre, Step, Table, Val
from tracer.analysis.explain.source import CodeRef

_BACKTICKS = re.compile(r"`+")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~<>&#])")


def _longest_run(text: str) -> int:
    return max((len(m.group()) for m in _BACKTICKS.finditer(text)), default=0)


def code_span(value: object, *, in_table: bool = False) -> str:
    """An untrusted value as an inline code span that shows exactly that value."""
    text = neutralise(value if isinstance(value, str) else str(value))
    if text == "":
        return "*(empty)*"
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (_longest_run(text) + 1)
    pad = " " if text[0] in "` " or text[-1] in "` " else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def plain(text: str) -> str:
    """Untrusted text outside code: every Markdown and HTML special character escaped."""
    return _MD_SPECIAL.sub(r"\\\1", neutralise(text))


def inline(parts: Cell, *, in_table: bool = False) -> str:
    if isinstance(parts, (str, Val)):
        parts = [parts]
    out = []
    for part in parts:
        if isinstance(part, Val):
            out.append(code_span(part.text, in_table=in_table))
        else:
            out.append(part.replace("|", "\\|") if in_table else part)
    return "".join(out)


def fenced(lines: list[str], lang: str = "") -> list[str]:
    body = [neutralise(line) for line in lines]
    fence = "`" * max(3, max((_longest_run(line) for line in body), default=0) + 1)
    return [f"{fence}{lang}", *body, fence]


def table(t: Table) -> list[str]:
    out = ["| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
    for row in t.rows:
        out.append("| " + " | ".join(inline(cell, in_table=True) for cell in row) + " |")
    return out


def block(b: Block) -> list[str]:
    if isinstance(b, Para):
        return [inline(b.parts)]
    if isinstance(b, Table):
        return table(b)
    if isinstance(b, Pre):
        return [f"*{b.caption}:*", "", *fenced(b.lines, "http")]
    raise TypeError(b)


def where(ref: CodeRef, with_source: bool = True) -> list[str]:
    """``- **Where:** `function` at `path:line` (package)`` and the source lines."""
    if not ref.found:
        return [f"- **Where:** {code_span(ref.function)} — {plain(ref.problem or '')}"]
    line = f"- **Where:** {code_span(ref.function)} at {code_span(ref.location)} ({ref.package})"
    if ref.recorded_note:
        line += f" — {ref.recorded_note}"
    if not with_source or not ref.source:
        return [line]
    width = max(len(str(n)) for n, _ in ref.source)
    source = [f"{n if n else '':>{width}}  {text}" for n, text in ref.source]
    indented = ["  " + s for s in fenced(source, "python")]
    return [line, "", *indented]


def anchor(step: Step) -> str:
    """GitHub's heading anchor for ``## N. title``."""
    text = f"{step.number}. {step.title}".lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def step_lines(step: Step) -> list[str]:
    out = [f"## {step.number}. {step.title}", ""]
    refs = " · ".join(f"[{r.label}]({r.url}) {r.title}" if r.url else r.label for r in step.refs)
    out += [f"> {refs}", ""]
    out += [inline(step.says), ""]
    if step.missing:
        out += [f"*{plain(step.missing)}*", ""]
    if step.duration_ns is not None:
        out += [f"**Time:** {step.duration_label} {fmt.duration(step.duration_ns)}", ""]
    if step.show_source:
        for ref in step.code:
            out += [*where(ref), ""]
    else:
        out += [line for ref in step.code for line in where(ref, with_source=False)]
        out.append("")
    for b in step.blocks:
        out += [*block(b), ""]
    return out


def to_markdown(doc: Document) -> str:
    out = [f"# {plain(doc.title)}", ""]
    for b in doc.intro:
        out += [*block(b), ""]
    out += ["**Steps:**", ""]
    out += [f"{s.number}. [{s.title}](#{anchor(s)})" for s in doc.steps]
    out.append("")
    for step in doc.steps:
        out += step_lines(step)
    return "\n".join(out).rstrip() + "\n"


_OUTLINE = re.compile(r"^(#{1,2} .*)$|^- \*\*Where:\*\* (`+) ?(.*?) ?\2")


def markdown_outline(text: str) -> list[str]:
    """The outline (:meth:`Document.outline`) of a walkthrough written by :func:`to_markdown`."""
    lines = []
    fence: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```"):
            run = stripped[: len(stripped) - len(stripped.lstrip("`"))]
            if fence is None:
                fence = run
            elif stripped == fence:
                fence = None
            continue
        if fence is not None:
            continue
        match = _OUTLINE.match(line)
        if match and match.group(1):
            lines.append(match.group(1).replace("\\", ""))
        elif match:
            lines.append(f"where: {match.group(3)}")
    return lines


__all__ = ["code_span", "markdown_outline", "plain", "to_markdown"]
