"""The server variants the benchmark compares, and the performance bar they are held to.

Every variant serves the same auction app (:func:`demo_app.app.create_app`) on the same uvicorn
configuration; only the tracing differs.  FastAPI's native telemetry is switched off explicitly
in every variant but ``fastapi-native`` so that no variant pays for tracing it does not claim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BASELINE = "untraced"


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    kind: str
    """``none``, ``wstrace``, ``otel-asgi`` or ``fastapi-native``."""
    options: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``tracer.instrument`` (wstrace variants)."""
    sample_ratio: float | None = None
    """``ParentBased(TraceIdRatioBased(ratio))`` when set, else the SDK's default (always on)."""
    export: str = "process"
    """Where spans are encoded and written: ``process`` — by the OTLP JSON file exporter in a
    child process (:class:`tracer.export.offload.SubprocessExporter`), whose CPU is reported
    beside the server's; ``in-process`` — by the same exporter on the span processor's thread;
    ``discard`` — nowhere: the pipeline's writer takes the spans (as facts) and drops them,
    so the server pays for recording them and nothing for handing them on."""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(BASELINE, "untraced", "none"),
        Variant(
            "conn-spans",
            "wstrace connection shape, frames as spans",
            "wstrace",
            {"shape": "connection", "frames": "spans"},
        ),
        Variant(
            "msg-1pct",
            "wstrace message shape, 1% sampling",
            "wstrace",
            {"shape": "message", "frames": "spans"},
            sample_ratio=0.01,
        ),
        Variant(
            "frames-off",
            "wstrace connection shape, frames off",
            "wstrace",
            {"shape": "connection", "frames": "off"},
        ),
        Variant(
            "conn-inproc",
            "wstrace connection shape, frames as spans, spans encoded in the server process",
            "wstrace",
            {"shape": "connection", "frames": "spans"},
            export="in-process",
        ),
        Variant(
            "conn-discard",
            "wstrace connection shape, frames as spans, spans recorded and discarded",
            "wstrace",
            {"shape": "connection", "frames": "spans"},
            export="discard",
        ),
        Variant("otel-asgi", "opentelemetry-instrumentation-asgi", "otel-asgi"),
        Variant("fastapi-native", "FastAPI native telemetry", "fastapi-native"),
        Variant(
            "untraced-twin",
            "untraced, a second server: how far two identical servers differ (the noise)",
            "none",
        ),
        # Not in the default set: pick it with --variants.
        Variant(
            "conn-events",
            "wstrace connection shape, frames as events",
            "wstrace",
            {"shape": "connection", "frames": "events"},
        ),
    )
}

DEFAULT_VARIANTS: tuple[str, ...] = (
    BASELINE,
    "conn-spans",
    "msg-1pct",
    "frames-off",
    "conn-inproc",
    "conn-discard",
    "otel-asgi",
    "fastapi-native",
    "untraced-twin",
)


@dataclass(frozen=True)
class Bar:
    """One line of the performance bar: ``figure`` of ``variant`` against a limit.

    The bar is what tracing may cost before it distorts the latency it is there to measure,
    always as a ratio to (or difference from) the untraced server in the same run.
    """

    variant: str
    figure: str
    """A key of the summary: ``cpu_per_msg``, ``total_cpu_per_msg``, ``handshake_p50`` or
    ``idle_kib``."""
    limit: float
    mode: str
    """``ratio`` (variant / untraced ≤ limit) or ``delta`` (variant − untraced ≤ limit)."""
    text: str


BAR: tuple[Bar, ...] = (
    Bar("conn-spans", "cpu_per_msg", 1.25, "ratio",
        "server CPU per message, every stage and frame spanned ≤ 1.25×"),
    Bar("conn-spans", "total_cpu_per_msg", 1.6, "ratio",
        "server + export process CPU per message, every stage and frame spanned ≤ 1.6×"),
    Bar("msg-1pct", "cpu_per_msg", 1.05, "ratio",
        "server CPU per message, message shape at 1% sampling ≤ 1.05×"),
    Bar("conn-spans", "handshake_p50", 1.3, "ratio", "handshake p50 ≤ 1.3× (connection shape)"),
    Bar("msg-1pct", "handshake_p50", 1.3, "ratio", "handshake p50 ≤ 1.3× (message shape, 1%)"),
    Bar("frames-off", "handshake_p50", 1.3, "ratio", "handshake p50 ≤ 1.3× (frames off)"),
    Bar("conn-spans", "idle_kib", 8.0, "delta", "≤ +8 KiB per idle connection (connection shape)"),
    Bar("msg-1pct", "idle_kib", 8.0, "delta", "≤ +8 KiB per idle connection (message shape, 1%)"),
    Bar("frames-off", "idle_kib", 8.0, "delta", "≤ +8 KiB per idle connection (frames off)"),
)


def resolve(names: str | None) -> list[str]:
    """``"a,b"`` → ``["untraced", "a", "b"]``: the baseline always runs, ratios need it."""
    if not names:
        return list(DEFAULT_VARIANTS)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if wanted == ["all"]:
        return list(VARIANTS)
    unknown = [n for n in wanted if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    ordered = [BASELINE] + [n for n in wanted if n != BASELINE]
    return list(dict.fromkeys(ordered))
