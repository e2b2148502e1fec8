"""Run the test suite several times while other processes keep CPU cores busy.

A test that passes on an idle machine and fails when a core is taken by something else has a
race in it: it read a count the moment a client saw the bytes, or asserted that a tiny run
measured a positive time.  This command makes such races show up on purpose:

    python tests/stress.py --runs 5 --busy 1 [-- PYTEST ARGS...]

It prints each run's outcome and, at the end, how many runs passed and which tests failed in
how many runs.  Exit status 0 only if every run passed.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BURN = "while True: pass"
FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+)")


def burners(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes that each keep one core at 100% until killed."""
    return [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(count)]


def run_once(pytest_args: list[str]) -> tuple[int, list[str], str, float]:
    """One pytest run: its exit code, the failed test ids, its last line and its length."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    lines = proc.stdout.strip().splitlines()
    failed = [m.group(2) for line in lines if (m := FAILED_LINE.match(line))]
    return proc.returncode, failed, (lines[-1] if lines else ""), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="how many runs (default 5)")
    parser.add_argument("--busy", type=int, default=1, help="cores kept busy (default 1)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)

    failures: collections.Counter[str] = collections.Counter()
    passed = 0
    hogs = burners(args.busy)
    try:
        for run in range(1, args.runs + 1):
            code, failed, last, seconds = run_once(args.pytest_args)
            ok = code == 0
            passed += ok
            failures.update(failed)
            verdict = "passed" if ok else f"FAILED (exit {code})"
            print(f"run {run}/{args.runs}: {verdict} in {seconds:.0f} s — {last}", flush=True)
            for test in failed:
                print(f"    {test}", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"\n{passed} of {args.runs} runs passed with {args.busy} core(s) kept busy")
    for test, count in failures.most_common():
        print(f"  failed in {count} run(s): {test}")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
