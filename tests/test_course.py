"""The committed course material (docs/course/, written by `make course`) still matches what
today's code generates: same steps, same functions, for the installed versions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tracer.analysis.explain import markdown_outline, to_markdown
from tracer.walkthrough import WS_IMPLS, compare_document, scenario_document

COURSE = Path(__file__).resolve().parent.parent / "docs" / "course"
REGENERATE = "run `make course` and commit docs/course/"
PACKAGES = "uvicorn|websockets|wsproto|h11|httptools|zttp|starlette|fastapi"


def version_free(text: str) -> str:
    """The page without line numbers and package versions: what a new patch release of a
    dependency changes, and `make course` refreshes, while the functions named stay put."""
    text = re.sub(r"(\.py):\d+", r"\1:N", text)
    return re.sub(rf"\b({PACKAGES}) \d+(\.\d+)+\b", r"\1 V", text)


@pytest.mark.parametrize("ws", WS_IMPLS)
def test_walkthrough_outline_is_current(ws: str) -> None:
    committed = COURSE / f"{ws}.md"
    assert committed.exists(), f"{committed} missing: {REGENERATE}"
    fresh = scenario_document("httptools", ws)
    want = markdown_outline(committed.read_text(encoding="utf-8"))
    assert len(want) > 13, f"{committed} has no walkthrough outline"
    assert fresh.outline() == want, f"{committed} is out of date: {REGENERATE}"
    assert markdown_outline(to_markdown(fresh)) == want


def test_compare_outline_is_current() -> None:
    committed = COURSE / "compare.md"
    assert committed.exists(), f"{committed} missing: {REGENERATE}"
    fresh = to_markdown(compare_document())
    assert markdown_outline(fresh) == markdown_outline(committed.read_text(encoding="utf-8"))
    # The tables name the same functions (no times in this page at all); their line numbers
    # and the packages' versions are those of whatever is installed.
    assert version_free(fresh) == version_free(committed.read_text(encoding="utf-8")), (
        f"{committed}: {REGENERATE}"
    )
