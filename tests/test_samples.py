"""The committed sample traces still describe what today's code records."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracer.analysis.structure import name_counts, structure
from tracer.demo import SAMPLE_WS, sample_path, write_sample
from tracer.export.reader import load

SAMPLES = Path(__file__).resolve().parent.parent / "traces" / "samples"


@pytest.mark.parametrize("ws", SAMPLE_WS)
def test_sample_structure_is_reproduced(ws: str, tmp_path: Path) -> None:
    committed = sample_path(SAMPLES, ws)
    assert committed.exists(), f"{committed} missing: run `make samples`"
    fresh = write_sample(tmp_path, ws, step=lambda _: None)
    want = structure(load([committed]))
    got = structure(load([fresh]))
    assert len(got) == len(want) == 6  # five bidders and the refused connection
    for index, (a, b) in enumerate(zip(got, want, strict=True), start=1):
        assert name_counts(a) == name_counts(b), f"connection {index}"
        assert a == b, f"connection {index}: same counts, different nesting"
