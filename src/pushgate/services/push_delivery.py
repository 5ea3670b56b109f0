"""One push delivery job: send a batch of one notification's deliveries through their
transport, and record what happened to each.

The deliveries are claimed first: a conditional update that counts the attempt, and only
matches deliveries still ``queued`` at the attempt number the job was made for. Two copies of
one job (a redelivered or duplicated job) therefore never send the same delivery twice, unless
the first copy's attempt has been silent for longer than the job lease (its worker died); then
the delivery is sent again, which is the at-least-once promise.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from pushgate.domain.outcomes import (
    Delivered,
    Outcome,
    PermanentFailure,
    RetryLater,
    TokenInvalid,
    short_reason,
)
from pushgate.domain.retry import GiveUp, RetryAt, RetryPolicy
from pushgate.observability.metrics import Metrics
from pushgate.queue.base import QueueEngine
from pushgate.services.delivery_jobs import PushJob, deliver_queue
from pushgate.services.devices import DeviceAddress, DeviceService
from pushgate.storage.database import Database, now_ms
from pushgate.storage.delivery_writes import DeliveryWrites
from pushgate.transports.base import Content, Target, Transport

log = logging.getLogger(__name__)
# One line per delivery that failed for good (WARNING), with its reason.
failures = logging.getLogger("pushgate.delivery")
FINAL = ("failed", "expired")
CONTENT_CACHE = 256  # notifications whose content is kept (the cache is emptied when full)


_OUTCOME_LABELS: dict[type, str] = {
    Delivered: "delivered",
    RetryLater: "retry_later",
    TokenInvalid: "token_invalid",
    PermanentFailure: "permanent_failure",
}


@dataclass(frozen=True, slots=True)
class _Change:
    status: str
    reason: str | None
    sent_ms: int | None


class PushDelivery:
    def __init__(
        self,
        db: Database,
        queue: QueueEngine,
        devices: DeviceService,
        transports: dict[str, Transport],
        policy: RetryPolicy,
        lease_seconds: float,
        metrics: Metrics,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._queue = queue
        self._devices = devices
        self._transports = transports
        self._policy = policy
        self._lease_ms = int(lease_seconds * 1000)
        self._writes = DeliveryWrites(db.write.dialect.name)
        # Notifications are never changed once stored: the jobs of one (a fan-out makes one
        # per PUSH_BATCH devices) read its row once.
        self._contents: dict[int, Content] = {}

    async def _content(self, notification_id: int) -> Content | None:
        content = self._contents.get(notification_id)
        if content is not None:
            return content
        async with self._db.read.connect() as conn:
            rows = await self._writes.notifications_by_id(conn, [notification_id])
        if not rows:
            return None
        content = Content.from_row(rows[0])
        if len(self._contents) >= CONTENT_CACHE:
            self._contents.clear()
        self._contents[notification_id] = content
        return content

    async def _claim(
        self, job: PushJob, now: int
    ) -> tuple[dict[int, int], dict[int, DeviceAddress]]:
        """device id -> attempts (this one included) for the deliveries this job may send,
        and those devices' addresses (read in the same transaction, decrypted after it)."""
        async with self._db.writing() as conn:
            claimed = await self._writes.start_attempts(
                conn, job.notification_id, job.device_ids, job.attempts, now - self._lease_ms, now
            )
            rows = await self._devices.address_rows(conn, claimed) if claimed else []
        return claimed, self._devices.decode_addresses(rows)

    async def run(self, transport_name: str, job: PushJob) -> None:
        content = await self._content(job.notification_id)
        if content is None:
            return
        now = now_ms()
        if now >= content.expires_ms:
            async with self._db.writing() as conn:
                change = _Change("expired", "expired before it could be sent", None)
                await self._write(conn, job.notification_id, {change: job.device_ids}, now)
            self._metrics.deliveries.labels(transport_name, "expired").inc(len(job.device_ids))
            self._log_final(transport_name, job.notification_id, {change: job.device_ids})
            return
        claimed, addresses = await self._claim(job, now)
        if not claimed:
            # A stale copy: its deliveries were sent, retried under a newer job, or finished.
            # (Jobs are published only after their deliveries commit: queue/outbox.py.)
            return
        targets: list[Target] = []
        changes: dict[_Change, list[int]] = defaultdict(list)
        for device_id in claimed:
            address = addresses.get(device_id)
            if address is None or not address.enabled or not address.address:
                why = "the device is disabled" if address is not None else "the device is gone"
                changes[_Change("failed", why, None)].append(device_id)
                continue
            targets.append(Target(device_id, address.address, address.language, address.timezone))
        outcomes = await self._send_localized(transport_name, content, targets)
        later: dict[tuple[int, float | None, str], list[int]] = defaultdict(list)
        retries: dict[tuple[int, int], list[int]] = defaultdict(list)
        invalid: list[tuple[int, str]] = []
        sent_at = now_ms()
        counted = self._count(transport_name, outcomes)
        sent: list[int] = []  # the usual case, kept apart: no key object per delivery
        for target, outcome in zip(targets, outcomes, strict=True):
            device_id = target.device_id
            if isinstance(outcome, Delivered):
                sent.append(device_id)
            elif isinstance(outcome, TokenInvalid):
                reason = short_reason(outcome.reason)
                changes[_Change("failed", reason, None)].append(device_id)
                invalid.append((device_id, reason))
            elif isinstance(outcome, PermanentFailure):
                changes[_Change("failed", short_reason(outcome.reason), None)].append(device_id)
            else:
                later[(claimed[device_id], outcome.after_seconds, outcome.reason)].append(device_id)
        if sent:
            changes[_Change("sent", None, sent_at)].extend(sent)
        # One decision per group of deliveries that failed alike, so they retry as one job.
        for (attempts, after_seconds, why), device_ids in later.items():
            step = self._policy.next_step(
                attempts=attempts,
                now_ms=sent_at,
                expires_ms=content.expires_ms,
                retry_after_seconds=after_seconds,
                reason=why,
            )
            if isinstance(step, RetryAt):
                changes[_Change("queued", short_reason(why), None)].extend(device_ids)
                retries[(step.at_ms, attempts)].extend(device_ids)
            else:
                assert isinstance(step, GiveUp)
                changes[_Change(step.status, short_reason(step.reason), None)].extend(device_ids)
        # Devices first: a crash right after leaves the deliveries to be retried, and the
        # retry finds the device disabled.
        for device_id, reason in invalid:
            await self._devices.disable(device_id, reason)
        if invalid:
            counted.devices_disabled.labels(transport_name).inc(len(invalid))
        # (Written on the deliveries still queued only: one reported opened meanwhile keeps
        # that report, and its retry job finds nothing to send.)
        async with self._db.writing() as conn:
            await self._write(conn, job.notification_id, changes, sent_at)
            for (at_ms, attempts), device_ids in retries.items():
                retry = PushJob(job.notification_id, device_ids, attempts)
                await self._queue.enqueue(
                    deliver_queue(transport_name),
                    [retry.encode()],
                    delay_seconds=max(0.0, (at_ms - sent_at) / 1000),
                    conn=conn,
                )
        if retries:
            self._queue.wake(deliver_queue(transport_name))
        self._log_final(transport_name, job.notification_id, changes)

    def _count(self, transport_name: str, outcomes: list[Outcome]) -> Metrics:
        """Provider answers by outcome; returns the metrics for the caller's other counts."""
        metrics = self._metrics
        tally: dict[str, int] = defaultdict(int)
        for outcome in outcomes:
            tally[_OUTCOME_LABELS[type(outcome)]] += 1
        for label, count in tally.items():
            metrics.deliveries.labels(transport_name, label).inc(count)
        return metrics

    @staticmethod
    def _log_final(
        transport_name: str, notification_id: int, changes: dict[_Change, list[int]]
    ) -> None:
        """One line per delivery that failed for good, with its reason."""
        if not failures.isEnabledFor(logging.WARNING):
            return
        for change, device_ids in changes.items():
            if change.status not in FINAL:
                continue
            for device_id in device_ids:
                failures.warning(
                    "delivery %s: %s",
                    change.status,
                    change.reason,
                    extra={
                        "notification_id": notification_id,
                        "device_id": device_id,
                        "transport": transport_name,
                        "status": change.status,
                        "reason": change.reason,
                    },
                )

    async def _send_localized(
        self, transport_name: str, content: Content, targets: list[Target]
    ) -> list[Outcome]:
        """Each target gets the translation of its language: one send per translation."""
        if content.translations is None:
            return await self._send(transport_name, content, targets)
        groups: dict[str | None, list[int]] = defaultdict(list)
        for index, target in enumerate(targets):
            groups[content.variant(target.language)].append(index)
        outcomes: list[Outcome] = [RetryLater("not sent")] * len(targets)
        for indexes in groups.values():
            group = [targets[i] for i in indexes]
            localized = content.localized(group[0].language)
            sent = await self._send(transport_name, localized, group)
            for index, outcome in zip(indexes, sent, strict=True):
                outcomes[index] = outcome
        return outcomes

    async def _send(
        self, transport_name: str, content: Content, targets: list[Target]
    ) -> list[Outcome]:
        if not targets:
            return []
        transport = self._transports.get(transport_name)
        if transport is None:
            reason = f"no transport for platform {transport_name!r}"
            return [PermanentFailure(reason) for _ in targets]
        started = time.perf_counter()
        try:
            outcomes = await transport.send(content, targets)
        except Exception as exc:
            log.exception("%s transport failed; retrying its batch", transport_name)
            return [RetryLater(f"transport error: {exc.__class__.__name__}") for _ in targets]
        finally:
            self._metrics.provider_latency.labels(transport_name).observe(
                time.perf_counter() - started
            )
        if len(outcomes) != len(targets):
            log.error(
                "%s transport answered %d outcomes for %d targets",
                transport_name,
                len(outcomes),
                len(targets),
            )
            return [RetryLater("transport answered the wrong number of outcomes") for _ in targets]
        return outcomes

    async def _write(
        self,
        conn: AsyncConnection,
        notification_id: int,
        changes: dict[_Change, list[int]],
        at: int,
    ) -> None:
        for change, device_ids in changes.items():
            await self._writes.set_status(
                conn,
                notification_id,
                device_ids,
                status=change.status,
                reason=change.reason,
                sent_ms=change.sent_ms,
                at=at,
            )
