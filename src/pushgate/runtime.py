"""Everything one server process holds: settings, storage, services and the channel hub."""

from __future__ import annotations

from dataclasses import dataclass

from pushgate.channel.hub import Hub
from pushgate.config import Settings
from pushgate.crypto import SecretBox
from pushgate.services.accounts import AccountService
from pushgate.services.apps import AppService
from pushgate.services.devices import DeviceService
from pushgate.services.events import EventService
from pushgate.services.notifications import NotificationQueries
from pushgate.services.pipeline import DeliveryPipeline
from pushgate.services.send import SendService
from pushgate.storage.database import Database, open_database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    box: SecretBox
    accounts: AccountService
    apps: AppService
    events: EventService
    devices: DeviceService
    notifications: NotificationQueries
    hub: Hub
    pipeline: DeliveryPipeline
    send: SendService


def build_runtime(settings: Settings) -> Runtime:
    """Wire the services together; no I/O happens until the pipeline is started."""
    db = open_database(settings.resolved_database_url)
    box = SecretBox(settings.resolved_secret_key())
    events = EventService(db)
    devices = DeviceService(db, box)
    hub = Hub()
    pipeline = DeliveryPipeline(db, devices, hub)
    return Runtime(
        settings=settings,
        db=db,
        box=box,
        accounts=AccountService(db, box),
        apps=AppService(db, box),
        events=events,
        devices=devices,
        notifications=NotificationQueries(db),
        hub=hub,
        pipeline=pipeline,
        send=SendService(events, pipeline, settings.notification_ttl_seconds),
    )
