"""Where the code is: a recorded function name resolved in the installed packages.

A trace records ``code.function.name`` (``uvicorn.protocols.http.h11_impl.H11Protocol.
handle_events``), ``code.file.path`` and ``code.line.number`` as they were on the machine that
recorded it.  The walkthrough must be true for the versions installed *now*, so every location
is looked up again at generation time: the module's file is found from the installed package
(``importlib.util.find_spec`` on the top-level name, which imports nothing), the function's
``def`` is found by its qualified name in that file's syntax tree (which also finds functions
defined inside functions, ``create_app.<locals>.endpoint``), and the version comes from the
distribution's metadata.  Nothing here imports the traced libraries: the reading side stays
independent of uvicorn and the tracer's writing side.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import importlib.util
import linecache
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath

_PACKAGE_DIRS = ("site-packages", "dist-packages")
CONTEXT_AFTER = 5
"""Source lines shown after a ``def`` line (the signature and the first lines of the body)."""


@dataclass(frozen=True)
class Def:
    """One ``def`` in a file: qualified name and the lines it spans (``line`` is the ``def``)."""

    qualname: str
    line: int
    end_line: int
    body_line: int = 0
    """First line of the body after the docstring (0: the body is only a docstring)."""
    doc_line: int = 0
    """Where the docstring starts (0: none)."""
    decorator_line: int = 0
    """Where the first decorator is (0: none)."""


@dataclass
class CodeRef:
    """A function of an installed package, as the walkthrough shows it."""

    function: str
    """The name as recorded: module and qualified name, or the qualified name alone."""
    qualname: str
    module: str | None = None
    package: str | None = None
    """``uvicorn 0.54.0``, ``Python 3.11.7 standard library``, or the project's name."""
    path: str | None = None
    """The file relative to the directory holding its top-level package."""
    line: int | None = None
    """The line shown: the ``def`` line, or for a stack frame the line running in it."""
    def_line: int | None = None
    end_line: int | None = None
    decorator_line: int = 0
    recorded_line: int | None = None
    source: list[tuple[int, str]] = field(default_factory=list)
    file: str | None = None
    """The installed file's absolute path (not rendered: it differs between machines)."""
    problem: str | None = None
    """Why the location could not be confirmed in the installed code, if it could not."""

    @property
    def found(self) -> bool:
        return self.problem is None

    @property
    def recorded_note(self) -> str | None:
        """Why the trace's line differs from the one shown, when it does."""
        recorded = self.recorded_line
        if recorded is None or self.line is None or recorded == self.line:
            return None
        if (
            self.def_line
            and self.decorator_line
            and self.decorator_line <= recorded < self.def_line
        ):
            return f"the trace recorded line {recorded}, the decorator above the def"
        return f"the trace recorded line {recorded}: the file has changed since it was recorded"

    @property
    def location(self) -> str:
        if self.path is None:
            return "?"
        return f"{self.path}:{self.line}" if self.line is not None else self.path


# --- Finding files -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def package_dir(top: str) -> Path | None:
    """The directory (or single-file module) of an installed top-level name, without importing."""
    if not top.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        return Path(locations[0]) if locations else None
    if spec.origin and spec.origin.endswith(".py"):
        return Path(spec.origin)
    return None


def module_file(module: str) -> Path | None:
    """``a.b.c`` → ``…/a/b/c.py`` or ``…/a/b/c/__init__.py`` under the installed package."""
    parts = module.split(".")
    base = package_dir(parts[0])
    if base is None:
        return None
    if base.is_file():
        return base if len(parts) == 1 else None
    rest = parts[1:]
    for candidate in (
        base.joinpath(*rest).with_suffix(".py") if rest else None,
        base.joinpath(*rest, "__init__.py"),
    ):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def split_function(function: str) -> tuple[str, str] | None:
    """``pkg.mod.Class.meth`` → (``pkg.mod``, ``Class.meth``): the longest prefix with a file."""
    parts = function.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:cut])
        if "<" in module:
            continue
        if module_file(module) is not None:
            return module, ".".join(parts[cut:])
    return None


def module_of_path(recorded: str) -> str | None:
    """The module a recorded file path belongs to, found among the installed packages.

    After ``site-packages/`` the rest is the module path; otherwise the shortest tail of the
    path whose first part is an installed top-level package (``demo_app/app.py``,
    ``asyncio/events.py``) is taken.
    """
    parts = list(PurePath(recorded.replace("\\", "/")).parts)
    if not parts or not parts[-1].endswith(".py"):
        return None
    for marker in _PACKAGE_DIRS:
        if marker in parts:
            parts = parts[len(parts) - parts[::-1].index(marker) :]
            break
    for start in range(len(parts) - 1, -1, -1):
        tail = parts[start:]
        names = [*tail[:-1], tail[-1][: -len(".py")]]
        if names[-1] == "__init__":
            names = names[:-1]
        if not names or not all(n.isidentifier() for n in names):
            continue
        module = ".".join(names)
        found = module_file(module)
        if found is not None and found.name == tail[-1]:
            return module
    return None


# --- Finding defs --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def defs_in(path: str) -> dict[str, list[Def]]:
    """Every ``def`` in a file by qualified name (``__qualname__`` spelling, with ``<locals>``)."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return {}
    found: dict[str, list[Def]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = prefix + child.name
                end = child.end_lineno or child.lineno
                found.setdefault(qualname, []).append(_def(qualname, child, end))
                visit(child, f"{qualname}.<locals>.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _def(qualname: str, node: ast.FunctionDef | ast.AsyncFunctionDef, end: int) -> Def:
    body = node.body
    first = body[0]
    docstring = (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )
    rest = body[1:] if docstring else body
    return Def(
        qualname,
        node.lineno,
        end,
        body_line=rest[0].lineno if rest else 0,
        doc_line=first.lineno if docstring else 0,
        decorator_line=node.decorator_list[0].lineno if node.decorator_list else 0,
    )


def def_snippet(file: str, found: Def, context: int = CONTEXT_AFTER) -> list[tuple[int, str]]:
    """The signature (long ones cut) and the first lines of the body, docstring left out.

    A line number of 0 stands for lines left out (shown as ``…``).
    """
    body_start = found.body_line or found.end_line + 1
    signature_end = body_start - 1
    if found.doc_line:
        signature_end = found.doc_line - 1
    signature = source_lines(file, found.line, max(found.line, signature_end))
    if len(signature) > 6:
        signature = [*signature[:3], (0, "…"), *signature[-1:]]
    if found.doc_line:
        signature.append((0, "…  (docstring)"))
    if found.body_line:
        signature += source_lines(
            file, found.body_line, min(found.end_line, found.body_line + context - 1)
        )
    return signature


def find_def(path: str, qualname: str, near: int | None = None) -> Def | None:
    """The ``def`` of ``qualname`` in ``path``; among several, the one containing ``near``."""
    candidates = defs_in(path).get(qualname, [])
    if not candidates:
        return None
    if near is not None:
        for candidate in candidates:
            if candidate.line <= near <= candidate.end_line:
                return candidate
    return candidates[0]


# --- Packages and versions -----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _distributions() -> dict[str, list[str]]:
    return dict(importlib.metadata.packages_distributions())


@functools.lru_cache(maxsize=64)
def package_label(top: str) -> str:
    """``uvicorn 0.54.0``; the standard library and the project's own code say so."""
    if top in sys.stdlib_module_names:
        return f"Python {sys.version.split()[0]} standard library"
    for dist in _distributions().get(top, []):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"{top} (local code)"


def relative_path(module: str, file: Path) -> str:
    """The file relative to the directory that holds the top-level package."""
    top = module.split(".")[0]
    base = package_dir(top)
    if base is not None:
        root = base.parent
        try:
            return file.relative_to(root).as_posix()
        except ValueError:
            pass
    return file.name


def source_lines(file: str, first: int, last: int) -> list[tuple[int, str]]:
    """Lines ``first..last`` of an installed file, right-stripped, tabs expanded."""
    return [
        (n, linecache.getline(file, n).rstrip().expandtabs(4))
        for n in range(max(1, first), last + 1)
        if linecache.getline(file, n)
    ]


# --- Resolving -----------------------------------------------------------------------------------


def resolve(
    function: str,
    *,
    recorded_line: int | None = None,
    recorded_file: str | None = None,
    in_body: bool = False,
    context: int = CONTEXT_AFTER,
) -> CodeRef:
    """Look ``function`` up in the installed code.

    ``function`` is ``module.Qual.name`` (span attributes) or, with ``recorded_file``, the bare
    qualified name (a stack frame).  With ``in_body`` the recorded line is a line running inside
    the function (a stack frame): it is shown when it lies within the installed ``def``;
    otherwise the ``def`` line is shown.
    """
    module: str | None
    if recorded_file is not None:
        module = module_of_path(recorded_file)
        qualname = function
    else:
        split = split_function(function)
        module, qualname = split if split else (None, function)
    ref = CodeRef(function=function, qualname=qualname, module=module, recorded_line=recorded_line)
    if module is None:
        ref.problem = "not found among the installed packages"
        return ref
    file = module_file(module)
    assert file is not None  # module came from module_file
    ref.file = str(file)
    ref.package = package_label(module.split(".")[0])
    ref.path = relative_path(module, file)
    found = find_def(str(file), qualname, recorded_line)
    if found is None:
        ref.problem = f"no def of {qualname} in the installed {ref.path}"
        return ref
    ref.def_line, ref.end_line = found.line, found.end_line
    ref.decorator_line = found.decorator_line
    if in_body and recorded_line is not None and found.line <= recorded_line <= found.end_line:
        ref.line = recorded_line
        ref.source = source_lines(
            str(file), recorded_line - 2, min(found.end_line, recorded_line + 2)
        )
    else:
        ref.line = found.line
        ref.source = def_snippet(str(file), found, context)
    return ref


__all__ = [
    "CodeRef",
    "Def",
    "defs_in",
    "find_def",
    "module_file",
    "module_of_path",
    "package_label",
    "resolve",
    "split_function",
]
