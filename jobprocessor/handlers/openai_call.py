"""One OpenAI chat call for a job, through the shared limiter: choose the output cap from what answers of the job's
type and model use (policies/output_cap.py), reserve what OpenAI will count for the call (policies/tokens.py),
call with the SDK (its own retries off: the queue owns retries; timeout from the job's deadline), settle with what
the server said, log one line, and turn a failure into what the queue should do with the job.

An answer cut off by its cap (finish_reason "length") is asked again with a larger cap without spending an
attempt: in the same run when the job's deadline leaves time for it, else the job is rescheduled (RetryLater) and
its next run starts from that cap (ratelimit/output_stats.py keeps it). The cap at least doubles each time, so at
OPENAI_MAX_OUTPUT_TOKENS a cut-off answer is returned as it is and fails as it always did (the caller's check).
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Optional

import openai

from sqlalchemy.exc import SQLAlchemyError

from ..job import Job, PermanentError, RetryLater
from ..policies import openai_errors, output_cap, tokens
from ..ratelimit.core import Settlement
from ..ratelimit.headers import server_view
from ..ratelimit.limiter import MIN_CALL_S, MIN_RESCHEDULE_S, Grant, SharedLimiter
from ..ratelimit.output_stats import CapView, OutputStatsStore

log = logging.getLogger("jobprocessor.openai")

SETTLE_MARGIN_S = 1.5  # the call's timeout leaves this much of the job's deadline to settle and record the outcome
MAX_SERVER_MESSAGE_CHARS = 500


class UpstreamError(Exception):
    """A failed call worth trying again later (the queue spends an attempt and backs off): OpenAI unreachable, no
    answer before the deadline, an answer that is not what was asked for."""


@dataclass(frozen=True)
class ChatAnswer:
    content: Optional[str]
    refusal: Optional[str]
    finish_reason: Optional[str]
    model: str
    usage: dict
    request_id: Optional[str]
    max_output_tokens: int = 0  # the cap this answer was asked with
    cut_offs: int = 0  # answers cut off and asked again in this run before this one


_clients: dict[tuple[str, str], openai.OpenAI] = {}
_clients_lock = threading.Lock()


def client_for(api_key: str, base_url: str) -> openai.OpenAI:
    """One SDK client (and so one connection pool) per process and configuration, shared by its threads."""
    with _clients_lock:
        client = _clients.get((api_key, base_url))
        if client is None:
            client = openai.OpenAI(api_key=api_key, base_url=base_url or None, max_retries=0)
            _clients[(api_key, base_url)] = client
        return client


def redact(text: str, secret: str) -> str:
    """Error text may quote the key (servers echo part of a wrong one); the key never reaches last_error or logs."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "[redacted]")
    return text


def _server_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.message)[:MAX_SERVER_MESSAGE_CHARS]


def _usage(completion: Any) -> dict:
    usage = getattr(completion, "usage", None)
    if usage is None:
        return {}
    details = getattr(usage, "completion_tokens_details", None)
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "reasoning_tokens": getattr(details, "reasoning_tokens", None) if details is not None else None}


def _settlement(error: BaseException, now: float) -> tuple[Settlement, str]:
    """How much of the reservation a failed call used, and the outcome's name for the log."""
    if isinstance(error, openai.APITimeoutError):
        return Settlement(sent=True), "timeout"  # the server may have done the work: keep the estimate
    if isinstance(error, openai.APIConnectionError):
        return Settlement(sent=False, used_tokens=0), "unreachable"
    if isinstance(error, openai.APIStatusError):
        kind = openai_errors.classify_status(error.status_code, error.code)
        view = server_view(error.response.headers, now)
        return Settlement(sent=True, used_tokens=None if kind == openai_errors.SERVER else 0,
                          throttled=kind == openai_errors.THROTTLED, server_error=kind == openai_errors.SERVER,
                          view=view), kind
    return Settlement(sent=True), "error"


def _job_error(error: BaseException, outcome: Settlement, figures: dict, settings, timeout: float) -> BaseException:
    """The exception the handler raises for a failed call (see policies/openai_errors.py)."""
    key = settings.OPENAI_API_KEY
    if isinstance(error, openai.APITimeoutError):
        return UpstreamError(f"OpenAI did not answer within {timeout:.1f}s (the job's deadline)")
    if isinstance(error, openai.APIConnectionError):
        cause = error.__cause__ or error
        return UpstreamError(redact(f"cannot reach OpenAI ({settings.OPENAI_BASE_URL or 'api.openai.com'}): "
                                    f"{type(cause).__name__}: {cause}", key)[:MAX_SERVER_MESSAGE_CHARS])
    if isinstance(error, openai.APIStatusError):
        status, code = error.status_code, error.code
        message = redact(_server_message(error), key)
        described = f"OpenAI answered {status}{f' ({code})' if code else ''}: {message}"
        kind = openai_errors.classify_status(status, code)
        retry_after = outcome.view.retry_after_s if outcome.view is not None else None
        if kind == openai_errors.THROTTLED:
            return RetryLater(openai_errors.throttle_delay(retry_after), described)
        if kind == openai_errors.SERVER:
            return RetryLater(openai_errors.server_error_delay(figures.get("error_streak", 1), retry_after),
                              described)
        if kind == openai_errors.PERMANENT:
            hint = {401: " (check OPENAI_API_KEY)", 403: " (check the key's project and model access)",
                    404: f" (check OPENAI_MODEL={settings.OPENAI_MODEL!r} and OPENAI_BASE_URL)"}.get(status, "")
            return PermanentError(described + hint)
        return UpstreamError(described)
    return UpstreamError(redact(f"the OpenAI call failed: {type(error).__name__}: {error}", key))


def chat_json(job: Job, settings, limiter: SharedLimiter, *, messages: list, schema: dict, schema_name: str,
              output_stats: Optional[OutputStatsStore] = None) -> ChatAnswer:
    """Ask for a JSON answer that follows `schema` (structured outputs, strict). Raises RetryLater, PermanentError
    or UpstreamError as the queue should treat the job; returns the answer unchecked (the caller validates it; an
    answer still cut off at OPENAI_MAX_OUTPUT_TOKENS comes back with finish_reason "length")."""
    stats = output_stats if output_stats is not None else OutputStatsStore(limiter.store.engine)
    max_output = settings.OPENAI_MAX_OUTPUT_TOKENS
    response_format = {"type": "json_schema", "json_schema": {"name": schema_name, "strict": True, "schema": schema}}
    shared_cap, cap = _read_caps(stats, job, settings.OPENAI_MODEL).caps(max_output)
    counted, cut_offs, min_call_s = cap == shared_cap, 0, MIN_CALL_S
    while True:
        answer, latency_s = _call_once(job, settings, limiter, messages, response_format, cap, min_call_s)
        answer = replace(answer, cut_offs=cut_offs)
        if answer.finish_reason != "length":
            _record(stats, job, settings.OPENAI_MODEL, tokens=answer.usage.get("completion_tokens"))
            return answer
        # cut off: a cut-off at the shared cap is an answer of at least that size; an escalated one is not counted
        # again (one answer that never fits would otherwise drag the shared cap up on every step)
        next_cap = output_cap.retry_cap(cap, shared_cap, max_output)
        _record(stats, job, settings.OPENAI_MODEL, tokens=cap if counted else None, cut_off=True,
                retry_cap=next_cap or max_output)
        if next_cap is None:
            return answer
        min_call_s = max(MIN_CALL_S, latency_s * next_cap / cap)  # generation time grows with the tokens asked
        if job.time_left() - SETTLE_MARGIN_S < min_call_s:
            raise RetryLater(MIN_RESCHEDULE_S, f"the answer was cut off at {cap} output tokens "
                                               f"(max_completion_tokens); too little of the job's deadline is left "
                                               f"to ask again now, so it asks again with {next_cap} when it runs "
                                               "next (no attempt spent)")
        cap, counted, cut_offs = next_cap, False, cut_offs + 1


def _read_caps(stats: OutputStatsStore, job: Job, model: str) -> CapView:
    try:
        return stats.read(job.type, model, job.id)
    except SQLAlchemyError:  # no estimate: the upper bound, the safe side (a call costs more, none is cut off)
        log.warning("could not read the output cap estimate for %s; using OPENAI_MAX_OUTPUT_TOKENS", job.type,
                    exc_info=True)
        return CapView(output_cap.OutputStats(), None)


def _record(stats: OutputStatsStore, job: Job, model: str, **what) -> None:
    try:
        stats.record(job.type, model, job_id=job.id, **what)
    except SQLAlchemyError:  # the estimate misses one answer; the job's outcome matters more
        log.warning("could not record the answer's size for job %s", job.id, exc_info=True)


def _call_once(job: Job, settings, limiter: SharedLimiter, messages: list, response_format: dict, cap: int,
               min_call_s: float) -> tuple[ChatAnswer, float]:
    """One request with output cap `cap`: reserve what the server will count, call, settle. Returns the answer and
    the call's latency in seconds; raises as chat_json says."""
    charge = tokens.call_charge(messages, cap, response_format)
    grant: Grant = limiter.acquire(job, charge, min_call_s=min_call_s)
    timeout = max(0.5, job.time_left() - SETTLE_MARGIN_S)
    client = client_for(settings.OPENAI_API_KEY, settings.OPENAI_BASE_URL)
    started = time.monotonic()
    raw, error = None, None
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=settings.OPENAI_MODEL,
            messages=messages,
            response_format=response_format,
            max_completion_tokens=cap,
            timeout=timeout,
            # OpenAI's customer-supplied request id: ties its logs (and a support request) to this job and attempt
            extra_headers={"X-Client-Request-Id": f"jobprocessor-{job.id}-{job.attempts}-{uuid.uuid4().hex[:8]}"},
        )
    except openai.APIError as exc:
        error = exc
    except BaseException:  # unexpected (a bug, an interrupt): keep the charge, then propagate
        try:
            limiter.settle(grant, Settlement(sent=True))
        except Exception:  # the original exception matters more
            log.exception("could not settle the rate limiter for job %s", job.id)
        raise
    latency_s = time.monotonic() - started
    answer: Optional[ChatAnswer] = None
    if error is None:
        view = server_view(raw.headers, time.time())
        try:
            completion = raw.parse()
            choice = completion.choices[0]
            usage = _usage(completion)
            answer = ChatAnswer(content=choice.message.content, refusal=getattr(choice.message, "refusal", None),
                                finish_reason=choice.finish_reason, model=completion.model, usage=usage,
                                request_id=raw.request_id, max_output_tokens=cap)
            outcome, kind = Settlement(sent=True, used_tokens=usage.get("total_tokens"), succeeded=True,
                                       view=view), "ok"
        except Exception as exc:  # noqa: BLE001 - a body the SDK cannot read is a malformed answer
            error = UpstreamError(f"OpenAI's answer could not be read: {type(exc).__name__}: {exc}"[:500])
            outcome, kind = Settlement(sent=True, view=view), "malformed"
    else:
        outcome, kind = _settlement(error, time.time())
    figures = _settle_and_log(limiter, grant, outcome, job, kind, charge, int(latency_s * 1000),
                              status=raw.status_code if raw is not None else getattr(error, "status_code", None),
                              request_id=answer.request_id if answer else getattr(error, "request_id", None),
                              model=settings.OPENAI_MODEL, cap=cap,
                              finish_reason=answer.finish_reason if answer else None)
    if isinstance(error, UpstreamError):
        raise error
    if error is not None:
        raise _job_error(error, outcome, figures, settings, timeout) from None
    return answer, latency_s


def _settle_and_log(limiter: SharedLimiter, grant: Grant, outcome: Settlement, job: Job, kind: str, charge: int,
                    latency_ms: int, *, status: Optional[int], request_id: Optional[str], model: str, cap: int,
                    finish_reason: Optional[str]) -> dict:
    try:
        figures = limiter.settle(grant, outcome)
    except Exception:  # the charge stays (the safe side); the job's outcome still counts
        log.exception("could not settle the rate limiter for job %s", job.id)
        figures = {}
    log.info(json.dumps({
        "event": "openai_call", "job_id": job.id, "attempt": job.attempts, "model": model, "status": status,
        "outcome": kind, "waited_ms": int(grant.waited_s * 1000), "latency_ms": latency_ms,
        "max_completion_tokens": cap, "finish_reason": finish_reason, "charged_tokens": charge,
        "used_tokens": outcome.used_tokens, "request_id": request_id,
        **{k: figures.get(k) for k in ("requests_used", "requests_limit", "requests_utilisation_pct", "tokens_used",
                                       "tokens_charged", "tokens_limit", "tokens_utilisation_pct", "waiting_jobs",
                                       "requests_in_flight", "hold_s")},
    }))
    return figures
