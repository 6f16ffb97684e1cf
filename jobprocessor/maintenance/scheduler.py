"""The scheduler: one job for each recurring-job schedule whose slot has come (jobprocessor/schedules.py owns the
job_schedules table and the rule: idempotency key per slot, missed slots collapsed into one run)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Optional

from sqlalchemy.engine import Engine

from .. import schedules
from ..config import Settings
from ..metrics import observe_scheduled
from .config_check import positive_int

log = logging.getLogger("jobprocessor.maintenance")


@dataclass(frozen=True)
class SchedulerConfig:
    limit: int = 100  # most due schedules one pass enqueues (JOBS_SCHEDULES_PER_RUN); the rest are due next pass

    def __post_init__(self):
        positive_int("limit", self.limit)

    @classmethod
    def from_settings(cls, settings: Settings) -> "SchedulerConfig":
        return cls(limit=settings.JOBS_SCHEDULES_PER_RUN)


# what one pass did: schedules.enqueue_due's counts (enqueued, duplicates, invalid)
SchedulerResult = schedules.DueResult


class Scheduler:
    name = "scheduler"

    def __init__(self, engine: Engine, settings: Settings, config: Optional[SchedulerConfig] = None):
        # the settings validate the jobs it builds (payload size, priority), as an enqueue through the API does
        self.engine, self.settings = engine, settings
        self.config = config or SchedulerConfig.from_settings(settings)

    def run_once(self) -> SchedulerResult:
        with self.engine.begin() as conn:
            result = schedules.enqueue_due(conn, self.settings, limit=self.config.limit)
        observe_scheduled(result.enqueued)
        if result.enqueued or result.invalid:
            log.info(json.dumps({"event": "scheduler", **result.as_dict()}))
        return result
