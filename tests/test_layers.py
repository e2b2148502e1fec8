"""The package's layers hold: data flows one way, and the reading side stays light.

- ``import tracer``, ``tracer.wire``, ``tracer.export.reader``, the pytest plugin (which every
  pytest run loads once wstrace is installed) and the reading commands (``wstrace show`` /
  ``stats`` / ``export``) load neither the OpenTelemetry SDK nor uvicorn: checked in a fresh
  interpreter, from ``sys.modules``.
- The import contracts in ``pyproject.toml`` ([tool.importlinter]) are kept: the writing side
  is layered wire → recorder → hooks | asgi → instrumentor → entry points, the reading side never
  imports the writing side, the wire decoders import nothing of wstrace's.
- No two modules import each other, directly or through others (imports for type checkers
  only do not count: they never run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "traces" / "samples" / "demo-httptools-wsproto.otlp.jsonl"
HEAVY = ("opentelemetry.sdk", "uvicorn", "starlette", "fastapi", "tracer.recorder", "tracer.hooks")


def modules_loaded_by(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has loaded after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted(n for n in sys.modules if n.startswith({HEAVY!r}))))"
    )
    return run_probe(probe)


def run_probe(probe: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "module", ["tracer", "tracer.wire", "tracer.export.reader", "tracer.pytest_plugin"]
)
def test_importing_the_light_modules_loads_no_sdk_and_no_server(module: str) -> None:
    assert modules_loaded_by(f"import {module}") == []


def test_no_submodule_shadows_a_name_the_package_hands_on_lazily() -> None:
    """``tracer.broadcast`` must stay the function: a submodule of that name, once imported
    by anyone, would take its place on the package (``'module' object is not callable`` in
    the app's fan-out loop)."""
    import importlib.util

    import tracer

    lazy = tracer._LAZY
    assert [n for n in lazy if importlib.util.find_spec(f"tracer.{n}") is not None] == []
    probe = (
        "import inspect, json, tracer, tracer.asgi, tracer.instrumentor, tracer.recorder\n"
        f"print(json.dumps([callable(getattr(tracer, n)) and not inspect.ismodule("
        f"getattr(tracer, n)) for n in {sorted(lazy)!r}]))"
    )
    assert run_probe(probe) == [True] * len(lazy)


@pytest.mark.parametrize(
    "argv",
    [["show", str(SAMPLE)], ["stats", str(SAMPLE)], ["export", str(SAMPLE), "--format",
                                                      "perfetto", "-o", "{tmp}/out.json"]],
    ids=["show", "stats", "export"],
)
def test_reading_commands_load_no_sdk_and_no_server(argv: list[str], tmp_path: Path) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = (
        "import contextlib, io\n"
        "from tracer.cli import app\n"
        "status = 0\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        app({args!r})\n"
        "    except SystemExit as exit:\n"
        "        status = exit.code or 0\n"
        "assert status == 0, status\n"
    )
    assert modules_loaded_by(code) == []


def test_the_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "0 broken" in result.stdout or "broken" not in result.stdout.split("Contracts:")[-1]


def import_cycles(graph: grimp.ImportGraph) -> list[str]:
    """Every import whose target leads back to its importer, as ``a -> b -> … -> a``."""
    cycles = []
    for module in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if imported != module and imported.startswith("tracer"):
                back = graph.find_shortest_chain(importer=imported, imported=module)
                if back:
                    cycles.append(" -> ".join((module, *back)))
    return cycles


def test_there_are_no_import_cycles() -> None:
    assert import_cycles(grimp.build_graph("tracer", exclude_type_checking_imports=True)) == []
