"""The walkthrough as data: a document of steps, rendered to Markdown or HTML elsewhere.

Prose written by wstrace is plain ``str`` (inline code marked with backticks); every value that
comes from a trace is wrapped in :class:`Val` so that renderers know it is untrusted and escape
it for their format.  Keeping the document structured (rather than building Markdown directly)
is what lets the tests check each step's code locations, the accept computation and the frame
bits without parsing text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tracer.analysis.explain.source import CodeRef


@dataclass(frozen=True)
class Val:
    """A value from the trace: untrusted, rendered as escaped inline code."""

    value: Any

    @property
    def text(self) -> str:
        value = self.value
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, (list, tuple)):
            return ", ".join(str(v) for v in value)
        return str(value)


Inline = str | Val
"""A piece of text: ``str`` is wstrace's own prose (backticks mark code), ``Val`` is data."""
Cell = Inline | list[Inline]


@dataclass(frozen=True)
class RfcRef:
    """A section of a specification, e.g. RFC 6455 §4.2.2."""

    doc: str
    section: str
    title: str

    @property
    def url(self) -> str:
        if self.doc.startswith("RFC "):
            number = self.doc.split()[1]
            return f"https://www.rfc-editor.org/rfc/rfc{number}#section-{self.section}"
        if self.doc == "ASGI":
            return "https://asgi.readthedocs.io/en/latest/specs/www.html#websocket"
        return ""

    @property
    def label(self) -> str:
        return f"{self.doc} §{self.section}" if self.section else self.doc


@dataclass
class Para:
    parts: list[Inline]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]


@dataclass
class Pre:
    """Preformatted text from the trace (a request head): shown verbatim, escaped."""

    caption: str
    lines: list[str]


Block = Para | Table | Pre


@dataclass
class Step:
    number: int
    key: str
    """A stable identifier (``handshake``, ``first-frame``…): anchors and tests use it."""
    title: str
    refs: list[RfcRef]
    says: list[Inline]
    """What the protocol (or the ASGI spec) says about this step, in a few sentences."""
    code: list[CodeRef] = field(default_factory=list)
    duration_ns: int | None = None
    duration_label: str = "took"
    blocks: list[Block] = field(default_factory=list)
    show_source: bool = True
    """False where a table already lists many functions (the middleware chain)."""
    missing: str | None = None
    """Why the trace holds nothing for this step (the step stays in the outline)."""


@dataclass
class Document:
    title: str
    intro: list[Block]
    steps: list[Step]

    def outline(self) -> list[str]:
        """The structure without times, keys, addresses or line numbers: titles and functions.

        Two runs of the same scenario on the same installed versions have the same outline.
        """
        lines = [f"# {self.title}"]
        for step in self.steps:
            lines.append(f"## {step.number}. {step.title}")
            lines.extend(f"where: {ref.function}" for ref in step.code)
        return lines

    def step(self, key: str) -> Step:
        for step in self.steps:
            if step.key == key:
                return step
        raise KeyError(key)
