"""Hot spots of one package's code in a ``py-spy record --format raw`` profile.

py-spy's raw format (recorded with ``--full-filenames``) is one collapsed stack per line,
outermost frame first, with a sample count: ``f (/…/file.py:12);g (/…/pkg/mod.py:40) 7``.
Only non-idle samples are recorded (py-spy's default; a thread waiting on a ``threading``
lock, which py-spy counts as busy, is left out here too), so shares of the total are shares of
the server's busy (CPU) time.

Each sample is charged to its **owner**: the innermost frame that is not *support code* — the
standard library (``json``, ``contextlib`` …) and the libraries that work on their caller's
behalf (the OpenTelemetry SDK, protobuf, wrapt).  So time the SDK spends creating a span for
wstrace is wstrace's, while the app's own work running *inside* a wstrace wrapper is the app's.
For each function of the package (``tracer/`` by default) this gives:

- **attributed** — share of samples it owns: its own time plus the support code it calls,
  without double counting, so the attributed shares add up to the package's total;
- **inclusive** — share of samples with the function anywhere on the stack (for a wrapper,
  this includes whatever it wraps);
- **self** — share of samples in which it is the leaf frame.

Caveats: C code has no frame, so a thin Python wrapper around a C call (``TapTransport.write``
around the transport's ``write``) is charged the C call too, which without the wrapper is
charged to its caller (uvicorn, websockets); and coroutine frames are charged where they are
created.  ``other`` is samples with no owning frame at all (py-spy's ``--nonblocking``
sampling, used so that its idle detection works, sometimes reads partial stacks).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


SUPPORT_PACKAGES = ("opentelemetry", "google", "wrapt", "typing_extensions", "importlib_metadata")
ROOT = str(Path(__file__).resolve().parent.parent).replace("\\", "/") + "/"


def _roots(roots: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(r).replace("\\", "/").rstrip("/") + "/" for r in roots) or (ROOT,)


def short_name(path: str, roots: tuple[str, ...] = ()) -> str:
    """A full file name made relative: to ``site-packages``, or to the project's directory
    (``roots``: the project and any copy of it the servers ran from)."""
    path = path.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1]
    for root in _roots(roots):
        if path.startswith(root):
            return path[len(root):]
    marker = "/lib/python{}.{}/".format(*sys.version_info[:2])
    return path.split(marker, 1)[1] if marker in path else path


def owner_of(path: str, roots: tuple[str, ...] = ()) -> str | None:
    """Who a frame's time (or memory) belongs to: a top-level package name (``tracer``,
    ``uvicorn`` …), ``"event loop"``, or None for support code (the standard library, the
    OpenTelemetry SDK, protobuf …).  ``path`` is a full file name."""
    path = path.replace("\\", "/")
    if path.startswith("<"):
        return None  # <frozen runpy>, <string>
    if "/site-packages/" in path:
        top = short_name(path).split("/", 1)[0]
        top = top[:-3] if top.endswith(".py") else top
        if top in ("uvloop",):
            return "event loop"
        return None if top in SUPPORT_PACKAGES else top
    for root in _roots(roots):
        if path.startswith(root):
            top = path[len(root):].split("/", 1)[0]
            return "event loop" if top == "bench" else top  # the benchmark only runs the loop
    return "event loop" if "/asyncio/" in path else None  # the standard library


@dataclass(frozen=True)
class HotSpot:
    file: str
    function: str
    inclusive: float
    attributed: float
    self_: float


@dataclass(frozen=True)
class Profile:
    samples: int
    package_share: float
    """Share of samples the package owns (see the module's doc)."""
    owners: dict[str, float]
    """Share of samples by owner: ``tracer``, ``uvicorn``, ``demo_app``, ``event loop`` …"""
    spots: list[HotSpot]


def _split(stack: str) -> list[tuple[str, str]]:
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        if match:
            frames.append((match["file"], match["func"]))
        else:
            frames.append(("", raw.strip()))
    return frames


def analyze(path: str | Path, package: str = "tracer/", roots: tuple[str, ...] = ()) -> Profile:
    """``roots``: the directories the profiled code ran from (the project by default)."""
    package_name = package.rstrip("/")
    inclusive: Counter[tuple[str, str]] = Counter()
    attributed: Counter[tuple[str, str]] = Counter()
    leaf: Counter[tuple[str, str]] = Counter()
    owners: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _split(stack)
        if _blocked(frames):
            continue
        total += count
        owner, owning = "other", None
        for frame in reversed(frames):  # innermost first
            found = owner_of(frame[0], roots)
            if found is not None:
                owner, owning = found, frame
                break
        owners[owner] += count
        if owner == package_name and owning is not None:
            attributed[owning] += count
        for key in {f for f in frames if _in_package(f[0], package, roots)}:
            inclusive[key] += count
        if frames and _in_package(frames[-1][0], package, roots):
            leaf[frames[-1]] += count
    if total == 0:
        return Profile(0, 0.0, {}, [])
    spots = [
        HotSpot(short_name(file, roots), func, inclusive[(file, func)] / total,
                attributed[(file, func)] / total, leaf[(file, func)] / total)
        for (file, func) in inclusive
    ]
    spots.sort(key=lambda s: (s.attributed, s.inclusive), reverse=True)
    shares = {name: n / total for name, n in owners.most_common()}
    return Profile(total, shares.get(package_name, 0.0), shares, spots)


def _blocked(frames: list[tuple[str, str]]) -> bool:
    """A thread waiting on a ``threading`` lock (the span processor's worker between batches).

    py-spy reports these as busy although they only wait, so they are left out."""
    if not frames:
        return False
    file, function = frames[-1]
    return file.replace("\\", "/").endswith("/threading.py") and function.endswith(
        ("Condition.wait", "Event.wait", "_wait_for_tstate_lock")
    )


def _in_package(file: str, package: str, roots: tuple[str, ...] = ()) -> bool:
    return short_name(file, roots).startswith(package)


PHASE_COST = {
    "echo": ("cpu_per_msg_us", "µs/msg"),
    "fanout": ("fanout_cpu_us", "µs/fan-out"),
    "handshakes": ("handshake_cpu_us", "µs/handshake"),
}
"""The figure that prices one unit of each profiled phase (server CPU, from the same run)."""


def render(name: str, profile: Profile, top: int = 15, console: object = None,
           unit_cost: tuple[float, str] | None = None) -> None:
    """The owners and the top functions of the package; with ``unit_cost`` (CPU µs per unit of
    work measured in the same run, and the unit) also what each costs per unit."""
    from rich.console import Console
    from rich.table import Table

    out = console if isinstance(console, Console) else _console()
    owners = ", ".join(f"{k} {v:.1%}" for k, v in list(profile.owners.items())[:8])
    cost = f" of {unit_cost[0]:,.0f} {unit_cost[1]}" if unit_cost else ""
    table = Table(
        title=f"{name}: {profile.samples} samples; server CPU{cost} by owner: {owners}",
        header_style="bold",
    )
    table.add_column("tracer/ function", no_wrap=True)
    table.add_column("attributed", justify="right")
    if unit_cost:
        table.add_column(unit_cost[1], justify="right")
    table.add_column("inclusive", justify="right")
    table.add_column("self", justify="right")
    for spot in profile.spots[:top]:
        row = [f"{spot.file}:{spot.function}", f"{spot.attributed:.1%}"]
        if unit_cost:
            row.append(f"{spot.attributed * unit_cost[0]:,.0f}")
        row += [f"{spot.inclusive:.1%}", f"{spot.self_:.1%}"]
        table.add_row(*row)
    out.print(table)


def report_run(result: dict) -> dict:
    """Render the profiles and allocation reports of a ``--profile`` run; the hot spots."""
    hotspots = {}
    roots = (ROOT, result.get("options", {}).get("source") or ROOT)
    for variant, paths in result.get("profiles", {}).items():
        measured = (result["rounds"].get(variant) or [{}])[0]
        for phase, path in paths.items():
            analysis = analyze(path, roots=roots)
            key, unit = PHASE_COST.get(phase, ("", ""))
            cost = (float(measured[key]), unit) if key in measured else None
            render(f"{variant} / {phase}", analysis, unit_cost=cost)
            hotspots[f"{variant}/{phase}"] = {
                "samples": analysis.samples,
                "owners": analysis.owners,
                "unit_cost": cost,
                "top": [vars(s) for s in analysis.spots[:30]],
            }
    for variant, results in result.get("rounds", {}).items():
        for r in results:
            if "idle_tracemalloc" in r:
                render_allocations(variant, r["idle_tracemalloc"], r["idle"])
    return hotspots


def render_allocations(name: str, report: dict, connections: int, top: int = 15,
                       console: object = None) -> None:
    """The ``tracemalloc-report`` of an idle phase, per idle connection."""
    from rich.console import Console
    from rich.table import Table

    out = console if isinstance(console, Console) else _console()
    if "error" in report:
        out.print(f"{name}: {report['error']}")
        return
    per = max(connections, 1) * 1024.0
    packages = ", ".join(f"{k} {v / per:.1f}" for k, v in report["by_package"].items())
    table = Table(
        title=f"{name}: Python memory allocated and still held per idle connection: "
        f"{report['total_bytes'] / per:.1f} KiB ({packages})",
        header_style="bold",
    )
    table.add_column("tracer/ line that allocated (or called the SDK)", no_wrap=True)
    table.add_column("KiB / connection", justify="right")
    table.add_column("blocks / connection", justify="right")
    for entry in report["top"][:top]:
        table.add_row(entry["line"], f"{entry['bytes'] / per:.2f}",
                      f"{entry['blocks'] / max(connections, 1):.1f}")
    out.print(table)
    sites = [f"{e['line']} {e['bytes'] / per:.1f}" for e in report.get("top_any", [])[:8]]
    if sites:
        out.print(f"  largest allocation sites, any owner (KiB / connection): {'; '.join(sites)}")


def _console() -> object:
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)
