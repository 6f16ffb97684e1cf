"""The maintenance of one /process-pending call, in one place: after each claim round the processor hands the
claim's result here. The rescue has already happened inside the claim statement (its counts come back with it);
the scheduler runs only when the claim reports a schedule due, so a call with nothing to do stays one statement.
A failing service is logged and skipped, never failing the call: the jobs it has claimed still run."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Optional

from sqlalchemy.engine import Engine

from ..config import Settings
from ..queries import ClaimResult
from .rescuer import RescuerResult
from .scheduler import Scheduler, SchedulerResult

log = logging.getLogger("jobprocessor.maintenance")


@dataclass(frozen=True)
class TickMaintenanceResult:
    rescued: RescuerResult
    scheduled: Optional[SchedulerResult] = None  # None: no schedule was due (or the scheduler failed)

    @property
    def enqueued(self) -> int:
        return 0 if self.scheduled is None else self.scheduled.enqueued


class TickMaintenance:
    def __init__(self, engine: Engine, settings: Settings):
        self.scheduler = Scheduler(engine, settings)

    def after_claim(self, claim: ClaimResult) -> TickMaintenanceResult:
        scheduled = None
        if claim.schedules_due:
            try:
                scheduled = self.scheduler.run_once()
            except Exception:  # maintenance must not stop the claimed jobs from running
                log.exception("the scheduler failed; the call goes on with the jobs it holds")
                log.error(json.dumps({"event": "scheduler", "error": True}))
        return TickMaintenanceResult(RescuerResult.of_claim(claim), scheduled)
