"""Both ways of making a received message's family, compared where it is made: as a template
(its values, built where it is exported: :mod:`tracer.export.message_facts`) and as spans
made in the server, from the same records with the same ids."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

from tracer.export import facts
from tracer.export.otlp_json import items_to_otlp_bytes
from tracer.recorder.emit import messages


class _Taking:
    """Stands for a provider's fact takers: every fact to ``take``."""

    def __init__(self, take: Callable[[Any], None], origin: int) -> None:
        self._takers = (take,)
        self.origin = origin

    def takers(self) -> tuple[Callable[[Any], None], ...]:
        return self._takers


@dataclasses.dataclass
class TemplateCheck:
    """Every message template made while installed, against the family the server would have
    made of the same handling: ``differences`` holds each that is not the same fact, to the
    byte of its spans' OTLP/JSON."""

    compared: int = 0
    differences: list[Any] = dataclasses.field(default_factory=list)

    def emit(self, real: Callable[..., None], record: Any, handling: Any, values: Any,
             start: int, end: int, placement: int,
             takers: tuple[Callable[[Any], None], ...]) -> None:  # fmt: skip
        recorder = record.recorder
        sdk = recorder.sdk
        span_ids: list[int] = []
        trace_ids: list[int] = []

        def new_span_id() -> int:
            span_ids.append(sdk.new_span_id())
            return span_ids[-1]

        def new_trace_id() -> int:
            trace_ids.append(sdk.new_trace_id())
            return trace_ids[-1]

        template: list[Any] = []
        made: list[Any] = []
        try:
            recorder._sdk = dataclasses.replace(
                sdk, new_span_id=new_span_id, new_trace_id=new_trace_id
            )
            real(record, handling, values, start, end, placement, (template.append,))
            recorder._sdk = dataclasses.replace(
                sdk, new_span_id=iter(span_ids).__next__, new_trace_id=iter(trace_ids).__next__,
                templates=False, facts=_Taking(made.append, sdk.facts.origin),
            )  # fmt: skip
            messages.emit_spans(record, handling, values, start, end, placement)
            recorder._sdk = sdk
            if len(template) != 1 or not self._same(template[0], made, placement):
                self.differences.append((template, made))
        except Exception as exc:  # a difference too: reported by the test, not lost here
            self.differences.append(exc)
        finally:
            recorder._sdk = sdk
        self.compared += 1
        for take in takers:
            for fact in template:
                take(fact)

    @staticmethod
    def _same(template: Any, made: list[Any], placement: int) -> bool:
        """Under its connection, the one family fact the server would have made; in a trace
        of its own, the same spans (the server makes them one by one there)."""
        if placement == messages.UNDER_CONNECTION and (
            len(made) != 1 or facts.built(template) != made[0]
        ):
            return False
        spans = facts.expand(template)
        if spans != [one for fact in made for one in facts.expand(fact)]:
            return False
        origins = {template[facts.ORIGIN]: facts.origin_parts(template[facts.ORIGIN])}
        return items_to_otlp_bytes(spans, origins) == items_to_otlp_bytes(
            [one for fact in made for one in facts.expand(fact)], origins
        )


@contextmanager
def templates_checked() -> Iterator[TemplateCheck]:
    """While in the block, every message template is checked (see :class:`TemplateCheck`) and
    then handed on as it would have been."""
    check = TemplateCheck()
    real = messages.emit_template

    def emit(*args: Any) -> None:
        check.emit(real, *args)

    with patch.object(messages, "emit_template", emit):
        yield check
