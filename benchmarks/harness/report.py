"""What a benchmark prints: the output options, the run wrapper (table or JSON, exit code),
number formatting and the targets with PASS/FAIL.

A benchmark's ``run(args, log)`` returns one JSON-able dict with a ``targets`` list of
``target(...)`` dicts (empty when it has no target); its ``print_table(result)`` prints the
table and ends with ``print_targets(result["targets"])``; its ``main`` is::

    ap = argparse.ArgumentParser(...)
    ...
    add_output_options(ap)
    return run_and_report(ap.parse_args(argv), run, print_table)
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import HarnessError

Log = Callable[[str], None]


def log(msg: str) -> None:
    """Progress goes to stderr, so that --json keeps stdout one JSON object."""
    print(msg, file=sys.stderr, flush=True)


def utc_now() -> str:
    """The run's date, e.g. 2026-12-06T21:48:36Z."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_output_options(ap: argparse.ArgumentParser, keep_data: bool = True) -> None:
    """--json, --json-out FILE and (unless ``keep_data=False``) --keep-data."""
    if keep_data:
        ap.add_argument("--keep-data", action="store_true", help="keep the temp data and log")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--json-out", type=Path, help="also write the JSON object to this file")


def dumps(result: Any) -> bytes:
    """The JSON of a result, indented, with a final newline."""
    return orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n"


def output(args: argparse.Namespace, result: Any, print_table: Callable[[Any], None]) -> None:
    """Write the JSON to ``args.json_out`` if given; print the JSON (``args.json``) or the
    table."""
    if args.json_out:
        args.json_out.write_bytes(dumps(result))
    if args.json:
        sys.stdout.write(dumps(result).decode())
    else:
        print_table(result)


def run_and_report(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, Log], Any],
    print_table: Callable[[Any], None],
    exit_code: Callable[[Any], int] | None = None,
) -> int:
    """Run a benchmark (progress on stderr), then print its table or JSON. The exit code is 2
    on a harness error, else ``exit_code(result)`` when given, else 0 whatever the targets
    say."""
    try:
        r = run(args, log)
    except HarnessError as exc:
        log(f"harness error: {exc}")
        return 2
    output(args, r, print_table)
    return exit_code(r) if exit_code is not None else 0


def target(
    name: str, measured: str, passed: bool | None, value: Any = None, **extra: Any
) -> dict[str, Any]:
    """One target: what it asks (``name``), what was measured, and whether it passed (None:
    reported without a verdict, or not measured)."""
    return {"target": name, "measured": measured, "value": value, "pass": passed, **extra}


def mark(passed: bool | None) -> str:
    """PASS, FAIL, or INFO for a figure reported without a pass/fail (``pass`` None)."""
    return "INFO" if passed is None else ("PASS" if passed else "FAIL")


def print_targets(
    targets: list[dict[str, Any]], heading: str = "\ntargets:", notes_at_end: bool = False
) -> None:
    """``[PASS]``/``[FAIL]`` (``[INFO]``: reported without a verdict) and what was measured,
    per target, a ``*`` on those with notes; the notes below each target, or (``notes_at_end``)
    each once after all. Says so when the benchmark has no target."""
    if not targets:
        print(f"{heading} none (this benchmark measures and compares; it has no target)")
        return
    print(heading)
    for t in targets:
        star = "*" if t.get("notes") else ""
        print(f"  [{mark(t['pass'])}{star}] {t['target']}: {t['measured']}")
        if not notes_at_end:
            for note in t.get("notes") or []:
                print(f"         note: {note}")
    if notes_at_end:
        for note in dict.fromkeys(n for t in targets for n in t.get("notes") or []):
            print(f"  * {note}")


def fmt(v: Any, unit: str = "", big: str = ",.0f", small: str = ".2f") -> str:
    """A number for a table: "-" for None; floats from 100 up as ``big`` (by default with
    thousands separators and no decimals), below it as ``small``; ints with thousands
    separators; ``unit`` appended."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:{big}}{unit}" if v >= 100 else f"{v:{small}}{unit}"
    return f"{v:,}{unit}"


def pct(v: float | None) -> str:
    """A CPU share in percent, "-" for None."""
    return "-" if v is None else f"{v:.0f}%"
