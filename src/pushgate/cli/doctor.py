"""``pushgate doctor``: check what Pushgate needs, and say how to fix what is wrong.

Each check answers ``ok``, ``warn`` or ``fail`` with a detail and, when not ok, a fix. The
command exits 1 when a check failed. Checks: the settings; the data dir's permissions; the
database and its migrations; on PostgreSQL, that a notice is heard the way workers hear of
other processes' jobs; Redis (when configured); each app's stored provider
credentials (decrypted and parsed again with the upload rules); the clock against the
database's and Redis's clocks (JWTs for APNs, FCM and Web Push are refused when the clock is
off); the open-files limit against the connections the server may hold.

With ``--online``, each stored credential is also proved with its provider
(``cli/doctor_online.py``): an access token from FCM and HMS, an accepted provider token from
APNs.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import stat
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer

from pushgate.config import SECRET_FILE_NAME, Settings, load_settings

if TYPE_CHECKING:
    from pushgate.crypto import SecretBox
    from pushgate.storage.database import Database

# JWTs are refused by providers beyond about a minute off; warn well before.
SKEW_WARN_SECONDS = 10.0
SKEW_FAIL_SECONDS = 60.0
MIN_OPEN_FILES = 4096


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def check_data_dir(data_dir: Path) -> list[Check]:
    if not data_dir.exists():
        return [Check("data dir", "warn", f"{data_dir} does not exist yet", "pushgate migrate")]
    found = [Check("data dir", "ok", str(data_dir))]
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & 0o077:
        found = [
            Check(
                "data dir",
                "warn",
                f"{data_dir} is open to other users (mode {mode:o})",
                f"chmod 700 {data_dir}",
            )
        ]
    key = data_dir / SECRET_FILE_NAME
    if key.exists():
        key_mode = stat.S_IMODE(key.stat().st_mode)
        if key_mode & 0o077:
            found.append(
                Check(
                    "secret key",
                    "fail",
                    f"{key} is readable by other users (mode {key_mode:o})",
                    f"chmod 600 {key}",
                )
            )
    return found


def check_open_files(settings: Settings) -> Check:
    from pushgate.serving import RESERVED_DESCRIPTORS

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    usable = hard if hard != resource.RLIM_INFINITY else 1_048_576
    wanted = settings.max_connections + RESERVED_DESCRIPTORS if settings.max_connections else 0
    detail = f"soft {soft}, hard {hard}; the server raises the soft limit to the hard one"
    fix = "raise the hard limit: LimitNOFILE=1048576 (systemd) or `ulimit -Hn` / limits.conf"
    if wanted and usable < wanted:
        return Check(
            "open files",
            "fail",
            f"{detail}, but max_connections={settings.max_connections} needs {wanted}",
            fix,
        )
    if usable < MIN_OPEN_FILES:
        return Check("open files", "warn", f"{detail}: few device connections fit", fix)
    return Check("open files", "ok", f"{detail}: about {usable - RESERVED_DESCRIPTORS} connections")


def _skew_check(source: str, skew: float) -> Check:
    detail = f"{skew:+.2f} s against {source}"
    fix = "synchronise the clock (chrony or systemd-timesyncd)"
    if abs(skew) >= SKEW_FAIL_SECONDS:
        return Check("clock", "fail", detail + ": provider JWTs will be refused", fix)
    if abs(skew) >= SKEW_WARN_SECONDS:
        return Check("clock", "warn", detail, fix)
    return Check("clock", "ok", detail)


async def check_storage(settings: Settings, online: bool = False) -> list[Check]:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import text

    from pushgate.crypto import SecretBox
    from pushgate.storage.database import open_database
    from pushgate.storage.migrate import alembic_config

    found: list[Check] = []
    db = open_database(settings.resolved_database_url)
    try:
        try:
            async with db.read.connect() as conn:
                current = await conn.run_sync(
                    lambda sync: MigrationContext.configure(sync).get_current_revision()
                )
                before = time.time()
                now = None
                if not db.is_sqlite:
                    now = (await conn.execute(text("SELECT extract(epoch from now())"))).scalar()
                after = time.time()
        except Exception as exc:
            found.append(
                Check(
                    "database",
                    "fail",
                    f"{exc.__class__.__name__}: {exc}".splitlines()[0],
                    "check PUSHGATE_DATABASE_URL and that the database server runs",
                )
            )
            return found
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        kind = db.write.dialect.name
        if current != head:
            found.append(
                Check(
                    "database",
                    "warn",
                    f"{kind}, schema {current or 'empty'}, newest {head}",
                    "pushgate migrate (serve also migrates at start)",
                )
            )
        else:
            found.append(Check("database", "ok", f"{kind}, schema {current} (newest)"))
        if now is not None:
            found.append(_skew_check("the database server", (before + after) / 2 - float(now)))
            found.append(await check_notices(db, settings.queue_poll_seconds))
        if current == head:
            box = SecretBox(settings.resolved_secret_key())
            found.extend(
                await check_credentials(
                    db, box, settings if online else None, settings.fcm_token_hosts
                )
            )
    finally:
        await db.dispose()
    return found


async def check_notices(db: Database, poll_seconds: float) -> Check:
    """PostgreSQL: whether a notice is heard the way workers hear of other processes' jobs
    (a listening connection opened from the database URL by asyncpg itself)."""
    from sqlalchemy import text

    from pushgate.storage.notices import listen

    channel = f"pushgate_doctor_{int(time.time() * 1000)}"
    heard: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    listening = asyncio.Event()

    def on_payload(payload: str) -> None:
        if not heard.done():
            heard.set_result(payload)

    hearing = asyncio.create_task(listen(db.url, channel, on_payload, on_listening=listening.set))
    try:
        waiting = asyncio.ensure_future(listening.wait())
        await asyncio.wait({hearing, waiting}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if not listening.is_set():
            failure = hearing.exception() if hearing.done() else None
            raise failure or TimeoutError("not listening after 10 s")
        started = time.perf_counter()
        async with db.write.begin() as conn:
            await conn.execute(text("SELECT pg_notify(:channel, 'ping')"), {"channel": channel})
        await asyncio.wait_for(asyncio.shield(heard), 10)
    except Exception as exc:
        return Check(
            "job notices",
            "warn",
            f"no notice heard ({exc.__class__.__name__}: {exc}): workers find the jobs other "
            f"processes commit only at their look every {poll_seconds:g} s",
            "workers need a connection of their own straight to PostgreSQL for LISTEN "
            "(not through a transaction-pooling proxy such as PgBouncer) and a free "
            "connection slot (max_connections)",
        )
    finally:
        hearing.cancel()
        with contextlib.suppress(BaseException):
            await hearing
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Check("job notices", "ok", f"a notice was heard {elapsed_ms:.0f} ms after its commit")


async def check_credentials(
    db: Database,
    box: SecretBox,
    online: Settings | None = None,
    token_hosts: Sequence[str] = (),
) -> list[Check]:
    """Each stored credential decrypts and parses; with ``online`` (the settings to reach
    the providers with), each is also proved with its provider."""
    from sqlalchemy import select

    from pushgate.domain import credentials as kinds
    from pushgate.storage.models import app_credentials, apps

    async with db.read.connect() as conn:
        rows = (
            await conn.execute(
                select(apps.c.app_key, app_credentials.c.platform, app_credentials.c.secret_enc)
                .join(apps, apps.c.id == app_credentials.c.app_id)
                .order_by(apps.c.app_key, app_credentials.c.platform)
            )
        ).all()
    found: list[Check] = []
    # The upload's rules, with the operator's own token hosts (fcm_token_hosts).
    rules = kinds.Rules(token_hosts=frozenset(token_hosts))
    for app_key, platform, secret_enc in rows:
        name = f"credentials {app_key} {platform}"
        fix = f"pushgate credentials set {app_key} {platform} ... (docs/providers.md)"
        try:
            raw = orjson.loads(box.decrypt(secret_enc))
        except Exception:
            found.append(Check(name, "fail", "cannot be decrypted with this server secret", fix))
            continue
        try:
            await asyncio.to_thread(kinds.parse, platform, raw, rules)
        except Exception as exc:
            found.append(Check(name, "fail", str(exc).splitlines()[0], fix))
            continue
        found.append(Check(name, "ok", "parses"))
        if online is not None:
            from pushgate.cli.doctor_online import check_online

            status, detail = await check_online(online, platform, raw)
            found.append(Check(f"{name} online", status, detail, fix if status != "ok" else ""))
    if not rows:
        found.append(Check("credentials", "ok", "no provider credentials stored"))
    return found


async def check_redis(settings: Settings) -> list[Check]:
    if settings.queue_url is None:
        return [Check("redis", "ok", "not configured (embedded queue)")]
    import redis.asyncio as aioredis

    from pushgate.queue.redis import redact_url

    client = aioredis.from_url(settings.queue_url)
    try:
        before = time.time()
        seconds, micros = await asyncio.wait_for(client.time(), 5)
        after = time.time()
    except Exception as exc:
        return [
            Check(
                "redis",
                "fail",
                f"{redact_url(settings.queue_url)}: {exc.__class__.__name__}: {exc}",
                "start Redis or fix PUSHGATE_QUEUE_URL",
            )
        ]
    finally:
        await client.aclose()
    return [
        Check("redis", "ok", redact_url(settings.queue_url)),
        _skew_check("Redis", (before + after) / 2 - (seconds + micros / 1e6)),
    ]


def run_checks(online: bool = False) -> list[Check]:
    try:
        settings = load_settings()
    except Exception as exc:
        return [
            Check(
                "settings",
                "fail",
                str(exc).replace("\n", " "),
                "fix the PUSHGATE_* variable or TOML key it names (docs/configuration.md)",
            )
        ]
    found = [Check("settings", "ok", f"environment {settings.environment}")]
    found.extend(check_data_dir(settings.data_dir))
    found.append(check_open_files(settings))

    async def io_checks() -> list[Check]:
        return [*await check_storage(settings, online), *await check_redis(settings)]

    found.extend(asyncio.run(io_checks()))
    if not any(check.name == "clock" for check in found):
        found.append(
            Check("clock", "ok", "no clock to compare with (SQLite, no Redis): not checked")
        )
    return found


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per check.")] = False,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Also prove each app's credentials with its provider: an access token from "
            "FCM and HMS, a provider token APNs accepts (no device is reached).",
        ),
    ] = False,
) -> None:
    """Check the settings, data dir, database, Redis, provider credentials, clock and
    open-files limit, and say how to fix what is wrong. Exits 1 when a check failed."""
    checks = run_checks(online)
    marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
    for check in checks:
        if as_json:
            typer.echo(orjson.dumps(asdict(check)).decode())
            continue
        line = f"[{marks[check.status]}] {check.name}: {check.detail}"
        typer.echo(line)
        if check.fix:
            typer.echo(f"       fix: {check.fix}")
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(1)
