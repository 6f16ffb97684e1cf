"""The rescuer: jobs whose lease ran out (their process died, or a handler stuck past JOBS_STUCK_HANDLER_S) go
back to pending, or to failed when their handler had started on the last attempt; one that was only leased comes
back as it was. Its SQL is the rescue step of queries.CLAIM, so every claim round rescues (bounded, SKIP LOCKED:
concurrent callers split the work); `run_once()` runs the same step alone (`flask jobs rescue`)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy.engine import Engine

from .. import queries
from ..config import Settings
from .config_check import positive_int


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
        with self.engine.begin() as conn:
            pending, failed = queries.rescue(conn, limit=self.config.limit)
        return RescuerResult(pending, failed)
