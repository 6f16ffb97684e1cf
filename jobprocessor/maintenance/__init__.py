"""Maintenance: the small services that keep the queue healthy, in River's shape. Each has a validated config
(`...Config`, `from_settings()`), and `run_once()` does one bounded pass and returns a typed result. None of them
holds SQL: each calls the module that owns the table it changes (docs/ARCHITECTURE.md, "Who owns which table").

    service                  what one pass does                         who runs it
    rescuer.Rescuer          expired leases back to pending (failed     every claim statement, inline (the claim's
                             on a last attempt), at most                 rescue step: a call with nothing due stays
                             JOBS_RESCUE_LIMIT                          one statement); alone: `flask jobs rescue`
    scheduler.Scheduler      one job per due recurring-job slot, at     a /process-pending call whose claim says a
                             most JOBS_SCHEDULES_PER_RUN                schedule is due; `flask jobs schedule run`
    cleaner.Cleaner          old finished jobs archived / deleted in    the daily `system.cleanup` job (a shipped
                             batches, then the tick history pruned       schedule); `flask jobs cleanup`

`tick.TickMaintenance.after_claim()` is the one place a /process-pending call runs maintenance.

The submodules are imported by name (`from jobprocessor.maintenance.cleaner import Cleaner`): this package imports
nothing itself, so a handler may use the cleaner without loading the scheduler's dependencies.
"""
