"""The rescuer: jobs whose lease ran out (their process died, or a handler stuck past JOBS_STUCK_HANDLER_S) go
back to pending, or to failed when their handler had started on the last attempt; one that was only leased comes
back as it was. Its SQL is the rescue step of queries.CLAIM, so every claim round rescues (bounded, SKIP LOCKED:
concurrent callers split the work); `run_once()` runs the same step alone (`flask jobs rescue`)."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass

from sqlalchemy.engine import Engine

from .. import queries
from ..config import Settings
from ..metrics import observe_rescued
from .config_check import positive_int

log = logging.getLogger("jobprocessor.maintenance")


@dataclass(frozen=True)
class RescuerConfig:
    limit: int = 1000  # most expired leases one pass rescues (JOBS_RESCUE_LIMIT)

    def __post_init__(self):
        positive_int("limit", self.limit)

    @classmethod
    def from_settings(cls, settings: Settings) -> "RescuerConfig":
        return cls(limit=settings.JOBS_RESCUE_LIMIT)


@dataclass(frozen=True)
class RescuerResult:
    pending: int = 0  # back to pending (to run again)
    failed: int = 0  # their last attempt had started: failed

    @property
    def rescued(self) -> int:
        return self.pending + self.failed

    @classmethod
    def of_claim(cls, claim: queries.ClaimResult) -> "RescuerResult":
        """What the rescue step of a claim statement did."""
        return cls(claim.rescued_pending, claim.rescued_failed)

    def as_dict(self) -> dict:
        return {**asdict(self), "rescued": self.rescued}


class Rescuer:
    name = "rescuer"

    def __init__(self, engine: Engine, config: RescuerConfig):
        self.engine, self.config = engine, config

    def run_once(self) -> RescuerResult:
        """One pass: at most `limit` expired leases (a claim round's share; the next pass takes the rest)."""
        with self.engine.begin() as conn:
            pending, failed = queries.rescue(conn, limit=self.config.limit)
        result = RescuerResult(pending, failed)
        observe_rescued(result.rescued)
        if result.rescued:
            log.info(json.dumps({"event": "rescuer", **result.as_dict()}))
        return result

    def run_until_done(self, max_passes: int = 1000) -> RescuerResult:
        """Passes until one finds fewer than `limit` expired leases (none left), at most `max_passes` of them."""
        pending = failed = 0
        for _ in range(max_passes):
            result = self.run_once()
            pending, failed = pending + result.pending, failed + result.failed
            if result.rescued < self.config.limit:
                break
        return RescuerResult(pending, failed)
