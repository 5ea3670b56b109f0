"""An in-memory transport for tests: answers each send from a script and records every send.

    transport = ScriptedTransport("ios", lambda content, target, attempt: Delivered())
    runtime = build_runtime(settings, transports={"ios": transport})

The script gets the attempt number (1 for the first send to that device of that notification),
so a test can fail the first attempts and let a later one through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pushgate.domain.outcomes import Delivered, Outcome
from pushgate.transports.base import Content, Target, Transport

Script = Callable[[Content, Target, int], Outcome]


@dataclass(frozen=True, slots=True)
class Sent:
    notification_id: int
    device_id: int
    address: str
    attempt: int
    at: float  # loop time
    outcome: Outcome


class ScriptedTransport(Transport):
    def __init__(self, platform: str, script: Script | None = None) -> None:
        self.platform = platform
        self._script: Script = script or (lambda _content, _target, _attempt: Delivered())
        self.sent: list[Sent] = []
        self._attempts: dict[tuple[int, int], int] = {}
        self.changed = asyncio.Condition()

    async def send(self, content: Content, targets: Sequence[Target]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        now = asyncio.get_running_loop().time()
        for target in targets:
            key = (content.notification_id, target.device_id)
            attempt = self._attempts[key] = self._attempts.get(key, 0) + 1
            outcome = self._script(content, target, attempt)
            outcomes.append(outcome)
            self.sent.append(
                Sent(
                    content.notification_id, target.device_id, target.address, attempt, now, outcome
                )
            )
        async with self.changed:
            self.changed.notify_all()
        return outcomes

    def sends_to(self, notification_id: int, device_id: int) -> list[Sent]:
        return [
            s
            for s in self.sent
            if s.notification_id == notification_id and s.device_id == device_id
        ]
