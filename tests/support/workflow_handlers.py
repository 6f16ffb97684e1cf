"""Handlers of the workflow tests (imported by tests.support.job_handlers, so every test app and gunicorn has them).

`wf.stage` records its run in job_executions and returns its stage; `payload.fail` makes it fail for good.
`wf.steps` runs steps whose functions record each run in step_runs (created by the tests that use it), so a test can
count how often a step's function ran (what an OpenAI call would have cost):
    mode "kill":  step "b" of the first run writes a marker and sleeps (the test SIGKILLs the process)
    mode "cut":   step "b" of a run not yet deferred works until the deadline, then raises (a budget cut)
    mode "raise": step "b" of the first attempt raises (an ordinary retry)
"""
import os
import time

from sqlalchemy import text

from jobprocessor.extensions import db
from jobprocessor.handlers import PermanentError, handler
from tests.support.executions import record_execution


@handler("wf.stage", max_attempts=3, timeout_s=20)
def stage(job):
    record_execution(job)
    time.sleep(float(job.payload.get("seconds", 0)))
    if job.payload.get("fail"):
        raise PermanentError(f"stage {job.payload.get('stage')} failed on purpose")
    return {"stage": job.payload.get("stage"), "batch": job.payload.get("batch")}


def _step_run(job, name: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO step_runs (job_id, name, pid, attempt) VALUES (:id, :name, :pid, :attempt)"),
                     {"id": job.id, "name": name, "pid": os.getpid(), "attempt": job.attempts})


@handler("wf.steps", max_attempts=3, timeout_s=20)
def steps(job):
    mode = job.payload.get("mode")

    def a():
        record_execution(job)
        _step_run(job, "a")
        return {"translated": job.payload.get("text", "").upper(), "pid": os.getpid()}

    def b():
        _step_run(job, "b")
        if mode == "kill" and job.attempts == 1:
            with db.engine.begin() as conn:
                conn.execute(text("INSERT INTO step_runs (job_id, name, pid, attempt) VALUES (:id, 'b-hang', "
                                  ":pid, :attempt)"), {"id": job.id, "pid": os.getpid(), "attempt": job.attempts})
            time.sleep(60)
        if mode == "cut" and job.deferrals == 0:
            time.sleep(job.time_left())
            raise TimeoutError("ran out of the call's budget")
        if mode == "raise" and job.attempts == 1:
            raise RuntimeError("upstream hiccup")
        return ["rewritten", job.attempts]

    first = job.step("a", a)
    second = job.step("b", b)
    return {"a": first, "b": second}
