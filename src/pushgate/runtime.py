"""Everything one Pushgate process holds: settings, storage, services, the queue engine, the
channel hub and the delivery workers; started and stopped in one place."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

from pushgate.channel.broadcast import ChannelBroadcast, LocalBroadcast, RedisBroadcast
from pushgate.channel.hub import Hub
from pushgate.channel.port import ChannelOut
from pushgate.config import Settings
from pushgate.crypto import SecretBox
from pushgate.domain.retry import RetryPolicy
from pushgate.egress import EgressPolicy
from pushgate.observability.metrics import Metrics
from pushgate.queue.base import QueueEngine
from pushgate.queue.embedded import EmbeddedQueue
from pushgate.queue.outbox import OutboxQueue
from pushgate.services.accounts import AccountService
from pushgate.services.api_keys import ApiKeyService
from pushgate.services.apps import AppService
from pushgate.services.credentials import CredentialService
from pushgate.services.delivery_jobs import CHANNEL, FANOUT_QUEUE, deliver_queue
from pushgate.services.devices import DeviceService
from pushgate.services.events import EventService
from pushgate.services.fan_out import FanOut
from pushgate.services.groups import GroupService
from pushgate.services.notifications import NotificationQueries
from pushgate.services.pipeline import DeliveryPipeline
from pushgate.services.push_delivery import PushDelivery
from pushgate.services.quotas import Quotas
from pushgate.services.retention import FIRST_SWEEP_SECONDS, Retention, RetentionLoop
from pushgate.services.scheduler import Scheduler
from pushgate.services.send import SendService
from pushgate.services.sendings import SENDING_QUEUE, SendingService
from pushgate.services.stats import StatsService
from pushgate.services.subscriber_import import SubscriberImport
from pushgate.services.subscriber_reports import SubscriberReports
from pushgate.services.subscribers import SubscriberService
from pushgate.services.user_sends import UserSendService
from pushgate.storage.database import Database, open_database
from pushgate.throttle import AuthThrottle
from pushgate.transports.base import Transport
from pushgate.transports.registry import build_transports
from pushgate.workers import Workers, publish_channel_jobs


@dataclass
class Runtime:
    settings: Settings
    db: Database
    box: SecretBox
    accounts: AccountService
    apps: AppService
    credentials: CredentialService
    events: EventService
    devices: DeviceService
    notifications: NotificationQueries
    hub: Hub
    jobs: EmbeddedQueue
    queue: QueueEngine
    broadcast: ChannelBroadcast
    transports: dict[str, Transport]
    pipeline: DeliveryPipeline
    workers: Workers
    send: SendService
    throttle: AuthThrottle
    subscribers: SubscriberService
    keys: ApiKeyService
    stats: StatsService
    user_sends: UserSendService
    reports: SubscriberReports
    sendings: SendingService
    groups: GroupService
    subscriber_import: SubscriberImport
    metrics: Metrics
    retention: RetentionLoop
    # Set when the process was told to stop: readiness then answers 503.
    stopping: bool = False
    stop_deadline: float = 0.0

    async def refresh_metrics(self) -> None:
        """Read the gauges that need I/O (queue depths), just before a scrape."""
        depths: dict[str, QueueEngine] = {FANOUT_QUEUE: self.jobs, SENDING_QUEUE: self.jobs}
        names = [*self.transports, CHANNEL] if self.queue.kind == "redis" else [*self.transports]
        for name in names:
            depths[deliver_queue(name)] = self.queue
        for queue_name, engine in depths.items():
            self.metrics.queue_depth.labels(queue_name).set(await engine.depth(queue_name))
            self.metrics.queue_oldest_age.labels(queue_name).set(
                await engine.oldest_age(queue_name)
            )
        pools = [("write", self.db.write)]
        if self.db.read is not self.db.write:
            pools.append(("read", self.db.read))
        for label, database_engine in pools:
            checked_out = getattr(database_engine.sync_engine.pool, "checkedout", None)
            if checked_out is not None:
                self.metrics.db_pool_checked_out.labels(label).set(checked_out())
        for name, transport in self.transports.items():
            streams = getattr(transport, "streams_in_flight", None)
            count = None if streams is None else streams()
            if count is not None:
                self.metrics.http2_streams.labels(name).set(count)

    async def start(self, *, accepting: bool, working: bool) -> None:
        """``accepting``: this process takes requests and holds device connections (a server);
        ``working``: it runs delivery workers."""
        await self.queue.start()
        await self.broadcast.start()
        if accepting:
            self.pipeline.start()
        if working:
            self.workers.start()
        self.retention.start()

    def begin_stop(self) -> None:
        """Told to stop (SIGTERM): readiness answers 503, workers take no new jobs. The
        deadline of ``stop`` starts now."""
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.settings.shutdown_timeout_seconds
            self.workers.request_stop()

    async def stop(self) -> None:
        """Workers finish the jobs in hand (until the deadline; the rest come back to the
        queue), status writes are flushed, connections closed."""
        self.begin_stop()
        await self.retention.stop()
        await self.workers.stop(max(1.0, self.stop_deadline - time.monotonic()))
        await self.pipeline.stop()
        await self.broadcast.close()
        await self.keys.close()
        await self.queue.close()
        if self.jobs is not self.queue:
            await self.jobs.close()
        for transport in self.transports.values():
            await transport.close()
        await self.db.dispose()


def build_queue(settings: Settings, jobs: EmbeddedQueue, db: Database) -> QueueEngine:
    """The embedded queue (jobs in the database), or Redis behind the outbox: jobs made in a
    transaction are published only after it commits (queue/outbox.py)."""
    if settings.queue_url is None:
        return jobs
    from pushgate.queue.redis import RedisQueue

    return OutboxQueue(RedisQueue(settings.queue_url, prefix=settings.queue_prefix), db)


def build_runtime(
    settings: Settings,
    *,
    accepting: bool = True,
    transports: dict[str, Transport] | None = None,
) -> Runtime:
    """Wire the services together; no I/O happens until ``start``. ``accepting``: whether
    this process holds device connections (it then receives channel broadcasts)."""
    db = open_database(settings.resolved_database_url)
    metrics = Metrics()
    box = SecretBox(settings.resolved_secret_key())
    events = EventService(db)
    egress = EgressPolicy.from_setting(settings.egress_allow)
    devices = DeviceService(db, box, egress, settings.max_devices_per_subscriber)
    credentials = CredentialService(
        db, box, settings.vapid_subject, token_hosts=settings.fcm_token_hosts
    )
    hub = Hub()
    metrics.channel_connected.set_function(hub.connection_count)
    metrics.read_counters.add(
        "pushgate_channel_frames_sent",
        "Frames written to device connections (WebSocket messages, SSE events and keep-alives).",
        lambda: hub.frames_sent,
    )
    metrics.read_counters.add(
        "pushgate_channel_bytes_sent",
        "Bytes of the frames written to device connections (without WebSocket framing).",
        lambda: hub.bytes_sent,
    )
    jobs = EmbeddedQueue(db, poll_seconds=settings.queue_poll_seconds)
    queue = build_queue(settings, jobs, db)
    broadcast: ChannelBroadcast
    if settings.queue_url is None:
        broadcast = LocalBroadcast(hub)
    else:
        broadcast = RedisBroadcast(
            settings.queue_url, settings.queue_prefix, hub if accepting else None
        )
    # With several processes (Redis) channel hand-offs travel as jobs through the outbox, and
    # its relay runs them itself (a publish to the servers over pub/sub) rather than leaving
    # them to a worker; with one, the fan-out does them itself right after its commit (see
    # FanOut), and the accepting pipeline fans out what is due at once in its own transaction.
    channel_jobs = settings.queue_url is not None
    if isinstance(queue, OutboxQueue):
        queue.run_inline(deliver_queue(CHANNEL), partial(publish_channel_jobs, broadcast))
    fan_out = FanOut(
        db,
        jobs,
        queue,
        ChannelOut(broadcast),
        direct=not channel_jobs,
        unengaged_after_days=settings.unengaged_after_days,
        scheduler_lag=metrics.scheduler_lag,
    )
    pipeline = DeliveryPipeline(db, jobs, metrics, fan_out)
    chosen = build_transports(settings, credentials, egress) if transports is None else transports
    policy = RetryPolicy(
        max_attempts=settings.max_attempts,
        base_seconds=settings.retry_base_seconds,
        max_seconds=settings.retry_max_seconds,
    )
    workers = Workers(
        jobs=jobs,
        queue=queue,
        fan_out=fan_out,
        scheduler=Scheduler(
            db, jobs, settings.notification_ttl_seconds, start_lag=metrics.sending_lag
        ),
        broadcast=broadcast,
        push=PushDelivery(db, queue, devices, chosen, policy, settings.job_lease_seconds, metrics),
        platforms=sorted(chosen),
        push_concurrency=settings.push_concurrency,
        lease_seconds=settings.job_lease_seconds,
        channel_jobs=channel_jobs,
    )
    apps = AppService(db, box, on_created=credentials.add_initial)
    send = SendService(db, events, pipeline, settings.notification_ttl_seconds)
    stats = StatsService(db)
    return Runtime(
        settings=settings,
        db=db,
        box=box,
        accounts=AccountService(db, box),
        apps=apps,
        credentials=credentials,
        events=events,
        devices=devices,
        notifications=NotificationQueries(db),
        hub=hub,
        jobs=jobs,
        queue=queue,
        broadcast=broadcast,
        transports=chosen,
        pipeline=pipeline,
        workers=workers,
        send=send,
        user_sends=UserSendService(db, apps, credentials, send),
        reports=SubscriberReports(db, box),
        subscribers=SubscriberService(db),
        stats=stats,
        sendings=SendingService(db, jobs, stats, settings.notification_ttl_seconds),
        groups=GroupService(db),
        subscriber_import=SubscriberImport(db, box, egress, settings.max_devices_per_subscriber),
        metrics=metrics,
        retention=RetentionLoop(
            Retention(db),
            settings.retention_days,
            interval=settings.retention_interval_seconds,
            first=min(FIRST_SWEEP_SECONDS, settings.retention_interval_seconds),
        ),
        keys=ApiKeyService(db, box, Quotas(settings.queue_url, settings.queue_prefix)),
        throttle=AuthThrottle(
            per_address=settings.auth_failures_per_minute,
            per_key=settings.auth_failures_per_key_per_minute,
        ),
    )
