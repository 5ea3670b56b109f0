"""Subscriber import: ``pushgate subscribers import`` of N subscribers with one device each, on
SQLite (the embedded default), against the storage's own floor measured in the same run.

Everything happens in temp dirs, through the real command line (``python -m pushgate``):

1. file      - N subscribers (``--subscribers``, 100,000) with one device each, as CSV or NDJSON
               (``--format``): external_id, email, language, country, two attributes (c_plan,
               c_age) and an iOS (APNs) or Android (FCM) device with its model. Not timed;
2. import    - ``pushgate subscribers import --app APP FILE --json --quiet`` into a fresh data
               directory: the command's wall time (process start, schema check, import) and
               the import's own time as the command reports it; rows/s;
3. re-run    - the same command on the same file again: it must change nothing (0 new, 0
               updated), and its time is the cost of checking N subscribers and devices;
4. per row   - the first ``--per-row`` rows (2,000) with ``--batch-size 1`` into another fresh
               data directory: one transaction per subscriber, as one API upsert plus one device
               registration each would write (without the HTTP);
5. floor     - the same N subscribers, attribute rows and devices inserted with Python's
               ``sqlite3`` into the same schema (``pushgate migrate``) with the same pragmas,
               500 subscribers per transaction, ``executemany``, values prepared beforehand: no
               validation, look-ups, encryption or hashing. What the storage itself costs;
6. check     - in the imported database: N subscribers, N devices, every device of the app
               and owned by its subscriber, no provider address twice.

Exit code 0 when it measured (and the checks passed), 1 when a check failed, 2 on a harness
error.

    .venv/bin/python -m benchmarks.subscriber_import
    .venv/bin/python -m benchmarks.subscriber_import --subscribers 20000 --format ndjson --json
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import platform
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.harness import HarnessError
from benchmarks.harness.report import (
    Log,
    add_output_options,
    print_targets,
    run_and_report,
    target,
)
from pushgate.testing.server import run_cli

FLOOR_BATCH = 500


def _subscriber(number: int, rng: random.Random) -> dict[str, Any]:
    ios = number % 2 == 0
    token = (
        rng.getrandbits(256).to_bytes(32, "big").hex()
        if ios
        else "".join(rng.choices("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123", k=152))
    )
    return {
        "external_id": f"user-{number}",
        "email": f"user{number}@example.com",
        "language": ("en", "nl", "de", "fr")[number % 4],
        "country": ("GB", "NL", "DE", "FR")[number % 4],
        "c_plan": ("free", "pro", "team")[number % 3],
        "c_age": 18 + number % 60,
        "platform": "ios" if ios else "android",
        "token": token,
        "device_model": "iPhone15,2" if ios else "Pixel 8",
    }


def write_file(path: Path, count: int, kind: str, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    people = [_subscriber(number, rng) for number in range(count)]
    with path.open("w", encoding="utf-8", newline="") as handle:
        if kind == "csv":
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(list(people[0]))
            writer.writerows(person.values() for person in people)
        else:
            for p in people:
                entry = {
                    "identifiers": {"external_id": p["external_id"], "email": p["email"]},
                    "language": p["language"],
                    "country": p["country"],
                    "attributes": {"c_plan": p["c_plan"], "c_age": p["c_age"]},
                    "devices": [
                        {"platform": p["platform"], "token": p["token"], "model": p["device_model"]}
                    ],
                }
                handle.write(orjson.dumps(entry).decode() + "\n")
    return people


def _cli(args: list[str], data_dir: Path, timeout: float) -> str:
    result = run_cli(args, data_dir, timeout=timeout)
    if result.returncode not in (0, 1):
        raise HarnessError(f"pushgate {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
    return result.stdout


def make_app(data_dir: Path) -> str:
    account = orjson.loads(_cli(["account", "create", "bench", "--json"], data_dir, 60))
    created = _cli(
        ["app", "create", "Shop", "--account", str(account["id"]), "--json"], data_dir, 60
    )
    return str(orjson.loads(created)["id"])


def timed_import(
    data_dir: Path, app: str, path: Path, timeout: float, *extra: str
) -> dict[str, Any]:
    started = time.perf_counter()
    out = _cli(
        ["subscribers", "import", "--app", app, str(path), "--json", "--quiet", *extra],
        data_dir,
        timeout,
    )
    wall = time.perf_counter() - started
    summary: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    summary["wall_seconds"] = round(wall, 3)
    summary["wall_rows_per_second"] = round(summary["rows"] / wall)
    return summary


def floor(data_dir: Path, people: list[dict[str, Any]], timeout: float) -> float:
    """Seconds for plain ``sqlite3`` inserts of the same rows into the same schema."""
    _cli(["migrate"], data_dir, timeout)
    db = sqlite3.connect(data_dir / "pushgate.db", isolation_level=None)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
        db.execute(f"PRAGMA {pragma}")
    db.execute(
        "INSERT INTO accounts (name, user_token_hash, user_token_enc, created_ms) "
        "VALUES ('floor', 'h', 'e', 1)"
    )
    db.execute(
        "INSERT INTO apps (account_id, title, app_key, secret_hash, secret_enc, created_ms) "
        "VALUES (1, 'Shop', 'floorapp', 'h', 'e', 1)"
    )
    now = int(time.time() * 1000)
    prepared = []
    for number, p in enumerate(people, start=1):
        digest = hashlib.sha256(p["token"].encode()).hexdigest()
        prepared.append(
            (
                (number, p["external_id"], p["email"], p["language"], p["country"], now, now),
                [
                    (number, "c_plan", 0, "string", p["c_plan"], None),
                    (number, "c_age", 0, "number", None, float(p["c_age"])),
                ],
                (
                    number,
                    number,
                    p["platform"],
                    p["device_model"],
                    hashlib.sha256(digest.encode()).hexdigest(),
                    "x" * 120,  # the size of an encrypted token
                    digest,
                    now,
                ),
            )
        )
    started = time.perf_counter()
    for start in range(0, len(prepared), FLOOR_BATCH):
        chunk = prepared[start : start + FLOOR_BATCH]
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT INTO subscribers (id, account_id, app_id, external_id, email, language, "
            "country, optin_push, created_ms, updated_ms) VALUES (?, 1, 1, ?, ?, ?, ?, 1, ?, ?)",
            [row[0] for row in chunk],
        )
        db.executemany(
            "INSERT INTO subscriber_attributes (subscriber_id, name, position, kind, text_value, "
            "num_value) VALUES (?, ?, ?, ?, ?, ?)",
            [attribute for row in chunk for attribute in row[1]],
        )
        db.executemany(
            "INSERT INTO devices (id, account_id, app_id, subscriber_id, platform, model, "
            "token_hash, push_token_enc, push_token_hash, enabled, created_ms) "
            "VALUES (?, 1, 1, ?, ?, ?, ?, ?, ?, 1, ?)",
            [row[2] for row in chunk],
        )
        db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    return seconds


def check(data_dir: Path, app: str, count: int) -> list[str]:
    db = sqlite3.connect(data_dir / "pushgate.db")
    try:
        app_id = db.execute("SELECT id FROM apps WHERE app_key = ?", (app,)).fetchone()[0]
        found = {
            "subscribers": db.execute("SELECT count(*) FROM subscribers").fetchone()[0],
            "devices": db.execute("SELECT count(*) FROM devices").fetchone()[0],
            "devices of the app": db.execute(
                "SELECT count(*) FROM devices d JOIN subscribers s ON s.id = d.subscriber_id "
                "WHERE d.app_id = ? AND s.app_id = ?",
                (app_id, app_id),
            ).fetchone()[0],
            "distinct addresses": db.execute(
                "SELECT count(DISTINCT push_token_hash) FROM devices"
            ).fetchone()[0],
        }
    finally:
        db.close()
    return [f"{name}: {value} (want {count})" for name, value in found.items() if value != count]


def measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    path = root / f"subscribers.{args.format}"
    t = time.perf_counter()
    people = write_file(path, args.subscribers, args.format)
    print(
        f"file: {args.subscribers:,} subscribers, {path.stat().st_size / 1e6:.1f} MB "
        f"({time.perf_counter() - t:.1f} s to write)",
        file=sys.stderr,
    )
    main_dir = root / "import"
    app = make_app(main_dir)
    first = timed_import(main_dir, app, path, args.time_limit, "--batch-size", str(args.batch_size))
    print(f"import: {first['rows_per_second']:,} rows/s", file=sys.stderr)
    again = timed_import(main_dir, app, path, args.time_limit, "--batch-size", str(args.batch_size))
    print(f"re-run: {again['rows_per_second']:,} rows/s", file=sys.stderr)
    problems = check(main_dir, app, args.subscribers)
    if again["subscribers"]["new"] or again["subscribers"]["updated"]:
        problems.append(f"the re-run changed subscribers: {again['subscribers']}")
    if again["devices"]["new"] or again["devices"]["updated"]:
        problems.append(f"the re-run changed devices: {again['devices']}")
    per_row_dir = root / "per-row"
    per_row_app = make_app(per_row_dir)
    sample = root / f"sample.{args.format}"
    write_file(sample, min(args.per_row, args.subscribers), args.format)
    per_row = timed_import(per_row_dir, per_row_app, sample, args.time_limit, "--batch-size", "1")
    print(f"per row: {per_row['rows_per_second']:,} rows/s", file=sys.stderr)
    floor_seconds = floor(root / "floor", people, args.time_limit)
    floor_rate = round(args.subscribers / floor_seconds)
    print(f"floor: {floor_rate:,} rows/s", file=sys.stderr)
    return {
        "subscribers": args.subscribers,
        "format": args.format,
        "batch_size": args.batch_size,
        "file_bytes": path.stat().st_size,
        "import": first,
        "rerun": again,
        "per_row": per_row,
        "floor_rows_per_second": floor_rate,
        "import_x_floor": round(first["rows_per_second"] / floor_rate, 3),
        "per_row_x_import": round(per_row["rows_per_second"] / first["rows_per_second"], 3),
        "problems": problems,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
        },
    }


def table(result: dict[str, Any]) -> str:
    first, again, per_row = result["import"], result["rerun"], result["per_row"]
    rows = [
        ("", "rows", "import time", "rows/s", "command wall time", "x floor"),
        (
            "sqlite3 floor (plain inserts)",
            f"{result['subscribers']:,}",
            "",
            f"{result['floor_rows_per_second']:,}",
            "",
            "1.000",
        ),
        (
            f"import, batches of {result['batch_size']}",
            f"{first['rows']:,}",
            f"{first['seconds']:.1f} s",
            f"{first['rows_per_second']:,}",
            f"{first['wall_seconds']:.1f} s",
            f"{result['import_x_floor']:.3f}",
        ),
        (
            "re-run (nothing to change)",
            f"{again['rows']:,}",
            f"{again['seconds']:.1f} s",
            f"{again['rows_per_second']:,}",
            f"{again['wall_seconds']:.1f} s",
            f"{again['rows_per_second'] / result['floor_rows_per_second']:.3f}",
        ),
        (
            "one transaction per row",
            f"{per_row['rows']:,}",
            f"{per_row['seconds']:.1f} s",
            f"{per_row['rows_per_second']:,}",
            f"{per_row['wall_seconds']:.1f} s",
            f"{per_row['rows_per_second'] / result['floor_rows_per_second']:.3f}",
        ),
    ]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    lines.append("")
    lines.append(f"re-run counts: subscribers {again['subscribers']}, devices {again['devices']}")
    machine = result["machine"]
    lines.append(
        f"machine: {machine['cpus']} CPUs, Python {machine['python']}, SQLite {machine['sqlite']}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace, log: Log) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="pushgate-import-bench-"))
    try:
        result = measure(args, root)
    except (OSError, sqlite3.Error) as exc:
        raise HarnessError(str(exc)) from exc
    finally:
        if args.keep_data:
            log(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    problems = result["problems"]
    result["targets"] = [
        target(
            "every row imported, and a re-run changes nothing",
            "; ".join(problems) or "all subscribers and devices stored, re-run changed nothing",
            not problems,
            len(problems),
        )
    ]
    return result


def print_table(result: dict[str, Any]) -> None:
    print(table(result))
    print_targets(result["targets"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--subscribers", type=int, default=100_000)
    ap.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--per-row", type=int, default=2_000, help="rows of the per-row phase")
    ap.add_argument("--time-limit", type=float, default=1800.0, help="seconds per command")
    add_output_options(ap)
    args = ap.parse_args(argv)
    return run_and_report(args, run, print_table, lambda r: 1 if r["problems"] else 0)


if __name__ == "__main__":
    sys.exit(main())
