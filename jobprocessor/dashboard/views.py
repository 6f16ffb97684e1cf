"""The dashboard's pages and actions (blueprint `dashboard`, under /dashboard).

Who may do what: neither DASHBOARD_SECRET nor DASHBOARD_READONLY_SECRET set -> every page answers 503 saying so.
Otherwise a signed-in session is needed (else the sign-in page); every POST needs the session's CSRF token; POSTs
that act need the operator role (read-only sessions get no action buttons, and their POSTs are refused with 403).
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Optional
from urllib.parse import urlencode

from flask import (Blueprint, current_app, g, make_response, redirect, render_template, request, url_for)
from sqlalchemy.exc import SQLAlchemyError

from .. import bulk, queries, schedules
from ..api.errors import ApiError, _is_unavailable
from ..api.params import choice_param, int_param, str_param
from ..extensions import db
from ..job import JOB_STATUSES
from ..ratelimit import rate_limiter_stats
from . import charts, data, flow_control, session, signin

log = logging.getLogger("jobprocessor.dashboard")
bp = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder="templates",
               static_folder="static", static_url_path="/static")
MAX_JOB_ID = 2**63 - 1
OPEN_ENDPOINTS = {"dashboard.signin", "dashboard.static"}
ROLE_LABEL = {session.OPERATOR: "operator", session.READONLY: "read-only"}


class Refused(Exception):
    def __init__(self, status: int, title: str, message: str, headers: Optional[dict] = None):
        super().__init__(message)
        self.status, self.title, self.message, self.headers = status, title, message, headers or {}


def _settings():
    return current_app.extensions["jobprocessor"].settings


def _actor() -> bulk.Actor:
    return bulk.Actor("dashboard", g.session.role)


# --- the gate: configured? signed in? CSRF? allowed to act? ---------------------------------------------------------

@bp.before_request
def gate():
    settings = _settings()
    if not (settings.DASHBOARD_SECRET or settings.DASHBOARD_READONLY_SECRET):
        if request.endpoint == "dashboard.static":
            return None
        raise Refused(503, "The dashboard is not configured",
                      "Set DASHBOARD_SECRET (operators, at least 16 characters) and optionally "
                      "DASHBOARD_READONLY_SECRET (look only), with DASHBOARD_SESSION_KEY, then restart. Until then "
                      "the dashboard is closed.")
    g.session = session.read(request, settings)
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    if g.session is None:
        if request.method == "GET":
            return redirect(url_for("dashboard.signin", next=request.full_path.rstrip("?")))
        raise Refused(401, "Signed out", "Your session has ended: sign in again.")
    if request.method == "POST":
        presented = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token")
        if not session.csrf_ok(g.session, presented):
            log.warning(json.dumps({"event": "dashboard_csrf_refused", "path": request.path}))
            raise Refused(403, "Refused", "This form has no valid CSRF token (it may be from an old page): reload "
                                          "the page and try again.")
        if request.endpoint != "dashboard.signout" and not g.session.may_act:
            raise Refused(403, "Read-only", "This session is read-only: it can look, not act.")
    return None


@bp.after_request
def headers(response):
    response.headers["Content-Security-Policy"] = ("default-src 'self'; script-src 'self'; style-src 'self'; "
                                                   "img-src 'self' data:; frame-ancestors 'none'; "
                                                   "form-action 'self'; base-uri 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "dashboard.static":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(Refused)
def refused(exc: Refused):
    response = make_response(render_template("dashboard/error.html", title=exc.title, message=exc.message,
                                             status=exc.status), exc.status)
    response.headers.update(exc.headers)
    return response


@bp.errorhandler(ApiError)
def bad_parameter(exc: ApiError):
    return refused(Refused(exc.status, "Bad request", exc.message, exc.headers))


@bp.errorhandler(SQLAlchemyError)
def database_error(exc: SQLAlchemyError):
    if _is_unavailable(exc):
        return refused(Refused(503, "Database unavailable", "The database is unreachable right now; nothing was "
                                                            "changed. Try again shortly.", {"Retry-After": "5"}))
    log.exception("dashboard database error")
    return refused(Refused(500, "Database error", "The database rejected the request; it has been logged."))


@bp.app_template_filter("ago")
def ago(seconds: Any) -> str:
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    if s < 86400 * 2:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


@bp.app_template_filter("num")
def num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


@bp.app_template_filter("ts")
def ts(moment: Any) -> str:
    if moment is None:
        return "—"
    if isinstance(moment, str):
        return moment
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@bp.app_template_filter("seconds")
def seconds(value: Any) -> str:
    if value is None:
        return "—"
    v = float(value)
    return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.2f} s"


@bp.app_template_filter("pretty")
def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@bp.context_processor
def context():
    current = getattr(g, "session", None)
    return {"session": current, "may_act": bool(current and current.may_act),
            "role_label": ROLE_LABEL.get(current.role) if current else None,
            "csrf_token": current.csrf if current else ""}


def page(template: str, **values):
    return render_template(f"dashboard/{template}", **values)


# --- sign-in and out -----------------------------------------------------------------------------------------------

def _safe_next(target: Optional[str]) -> str:
    """Only a path of this dashboard (never another host: no open redirect)."""
    if target and target.startswith("/dashboard") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("dashboard.overview")


def signin_page():
    settings = _settings()
    error, status = None, 200
    if request.method == "POST":
        client = signin.client_key(request.remote_addr)
        if not session.signin_token_ok(request, settings, request.form.get("csrf_token")):
            error, status = "This sign-in form has expired or was not sent by this page: try again.", 403
        elif signin.throttled(db.engine, client, settings.DASHBOARD_SIGNIN_ATTEMPTS):
            log.warning(json.dumps({"event": "dashboard_signin_throttled", "client": client}))
            error, status = "Too many failed sign-ins from your address: wait 10 minutes.", 429
        else:
            role = signin.role_for(settings, request.form.get("secret", ""))
            if role is not None:
                response = redirect(_safe_next(request.form.get("next")))
                session.open_session(response, request, settings, role)
                log.info(json.dumps({"event": "dashboard_signin", "role": role, "client": client}))
                return response
            signin.record_failure(db.engine, client)
            log.warning(json.dumps({"event": "dashboard_signin_failed", "client": client}))
            error, status = "That secret opens nothing here.", 401
    response = make_response("", status)
    token = session.signin_token(request, settings, response)
    # the form only (session=None: no navigation, no sign-out form with the session's token on this page)
    response.set_data(page("signin.html", session=None, may_act=False, error=error, signin_token=token,
                           next=_safe_next(request.values.get("next"))))
    if status == 429:
        response.headers["Retry-After"] = "600"
    return response


bp.add_url_rule("/signin", endpoint="signin", view_func=signin_page, methods=["GET", "POST"])


@bp.post("/signout")
def signout():
    response = redirect(url_for("dashboard.signin"))
    session.close_session(response)
    return response


# --- pages ---------------------------------------------------------------------------------------------------------

ALERTS_TTL_S = 10.0  # job_queue_alerts scans the due jobs: read it at most this often per process


def _alerts(conn) -> tuple[list, float]:
    """The alerts firing now, read at most every ALERTS_TTL_S per process (however many dashboards refresh), and
    their age in seconds."""
    cache = current_app.extensions.setdefault("jobprocessor_dashboard_alerts", {})
    now = time.monotonic()
    if "rows" not in cache or now - cache["at"] > ALERTS_TTL_S:
        cache.update(rows=data.read_alerts(conn), at=now)
    return cache["rows"], now - cache["at"]


@bp.get("/")
def overview():
    refresh = int_param("refresh", request.args.get("refresh"), 0, 3600, 5)
    with data.reading(db.engine) as conn:
        alerts, alerts_age_s = _alerts(conn)
        values = data.overview(conn, alerts=alerts)
    values["alerts_age_s"] = alerts_age_s
    values["hour_chart"] = charts.bar_chart(values["hour"], label_every=10)
    values["day_chart"] = charts.bar_chart(values["day"], label_every=8)
    values["limiter"] = rate_limiter_stats()
    return page("overview.html", refresh=refresh, **values)


@bp.get("/stores")
def stores_page():
    number = int_param("page", request.args.get("page"), 1, 1_000_000, 1)
    search = str_param("q", request.args.get("q"))
    with data.reading(db.engine) as conn:
        values = data.stores(conn, page=number, search=search)
        features = flow_control.features(conn)
        keys = [s["store_key"] for s in values["stores"]]
        controls = _controls(conn, features, keys)
    return page("stores.html", q=search or "", features=features, controls=controls, cap=data.STORE_COUNT_CAP,
                **values)


def _controls(conn, features, store_keys: list[str]) -> dict[str, dict]:
    """Per store: the pauses and limits that apply to it (its own, and those for every store)."""
    out = {key: {"pauses": [], "limits": []} for key in store_keys}
    if features.pauses:
        for pause in flow_control.list_pauses(conn, store_keys):
            for key in store_keys:
                if pause["store_id"] in (None, key):
                    out[key]["pauses"].append(pause)
    if features.limits:
        for limit in flow_control.list_limits(conn, store_keys):
            for key in store_keys:
                if limit["store_id"] in (None, key):
                    out[key]["limits"].append(limit)
    return out


@bp.get("/stores/<path:store_id>")
def store_page(store_id: str):
    store_id = str_param("store_id", store_id)
    with data.reading(db.engine) as conn:
        values = data.store(conn, store_id)
        features = flow_control.features(conn)
        controls = _controls(conn, features, [store_id])[store_id]
    return page("store.html", features=features, controls=controls, **values)


def _job_filters(args) -> dict:
    return {
        "status": choice_param("status", args.get("status"), JOB_STATUSES),
        "type": str_param("type", args.get("type")),
        "store_id": str_param("store_id", args.get("store_id")),
        "batch_id": str_param("batch_id", args.get("batch_id")),
        "error_contains": str_param("error_contains", args.get("error_contains")),
        "created_after": args.get("created_after") or None,
        "created_before": args.get("created_before") or None,
    }


def _times(filters: dict) -> dict:
    try:
        return {name: bulk.filter.parse_time(name, filters[name]) for name in ("created_after", "created_before")}
    except bulk.BulkError as exc:
        raise ApiError(400, "invalid_parameter", exc.message.replace("filter.", "")) from None


@bp.get("/jobs")
def jobs_page():
    filters = _job_filters(request.args)
    after = int_param("after", request.args.get("after"), 1, MAX_JOB_ID)
    with data.reading(db.engine) as conn:
        rows, next_after = data.jobs(conn, status=filters["status"], job_type=filters["type"],
                                     store_id=filters["store_id"], batch_id=filters["batch_id"],
                                     error_contains=filters["error_contains"], after=after, **_times(filters))
    query = {k: v for k, v in filters.items() if v}
    actions = []
    if filters["status"] in (None, "failed", "cancelled"):
        actions.append("retry")
    if filters["status"] in (None, "pending"):
        actions.append("cancel")
    return page("jobs.html", jobs=rows, filters=filters, next_after=next_after, statuses=JOB_STATUSES,
                next_url=url_for("dashboard.jobs_page", **query, after=next_after) if next_after else None,
                first_url=url_for("dashboard.jobs_page", **query) if after else None,
                bulk_actions=actions, bulk_query=query)


def _job_id(raw: str) -> int:
    return int_param("job id", raw, 1, MAX_JOB_ID)


@bp.get("/jobs/<raw_id>")
def job_page(raw_id: str):
    job_id = _job_id(raw_id)
    with data.reading(db.engine) as conn:
        job = data.job(conn, job_id)
        chain = data.chain(conn, job_id) if job else None
        features = flow_control.features(conn)
        reasons = flow_control.wait_reasons(conn, job_id) if (job and features.wait_reasons) else None
    if job is None:
        raise Refused(404, "Not found", f"No job {job_id}.")
    return page("job.html", job=job, chain=chain, features=features, reasons=reasons)


def _one_job(raw_id: str, action: str):
    job_id = _job_id(raw_id)
    with db.engine.begin() as conn:
        row = (queries.retry_job if action == "retry" else queries.cancel_job)(conn, job_id)
    if row is None:
        raise Refused(409, "Not changed", f"Job {job_id} cannot be {'retried' if action == 'retry' else 'cancelled'}"
                                          " in its current status.")
    bulk.log.record(db.engine, _actor(), action, {"id": job_id})
    return redirect(url_for("dashboard.job_page", raw_id=job_id))


@bp.post("/jobs/<raw_id>/retry")
def retry_job(raw_id: str):
    return _one_job(raw_id, "retry")


@bp.post("/jobs/<raw_id>/cancel")
def cancel_job(raw_id: str):
    return _one_job(raw_id, "cancel")


@bp.get("/failed")
def failed_page():
    window = choice_param("window", request.args.get("window"), tuple(data.WINDOWS)) or "24h"
    with data.reading(db.engine) as conn:
        groups = data.failed_groups(conn, window)
    return page("failed.html", groups=groups, window=window, windows=data.WINDOWS)


# --- bulk actions: dry run, confirmation, action ---------------------------------------------------------------------

def _bulk_request(values, dry_run: bool) -> bulk.BulkRequest:
    raw_filter = {name: values.get(name) for name in bulk.filter.FILTER_FIELDS if values.get(name)}
    try:
        return bulk.parse_request({"action": values.get("action"), "filter": raw_filter, "dry_run": dry_run})
    except bulk.BulkError as exc:
        raise Refused(400, "Bad request", exc.message) from None


@bp.get("/bulk/confirm")
def bulk_confirm():
    """The dry run: how many jobs the action would change, and a form to go ahead."""
    if not g.session.may_act:
        raise Refused(403, "Read-only", "This session is read-only: it can look, not act.")
    request_ = _bulk_request(request.args, dry_run=True)
    matched = bulk.count_matching(db.engine, request_.filter)
    return page("confirm.html", action=request_.action, matched=matched, filter=request_.filter.as_dict(),
                fields={k: v for k, v in request.args.items() if k in bulk.filter.FILTER_FIELDS and v},
                back=_safe_next(request.args.get("back")))


@bp.post("/bulk")
def bulk_action():
    request_ = _bulk_request(request.form, dry_run=False)
    result = bulk.run(db.engine, request_, _actor())
    return redirect(url_for("dashboard.actions_page", done=result.action_id))


# --- batches, schedules, controls, action log ----------------------------------------------------------------------

@bp.get("/batches")
def batches_page():
    before = str_param("before", request.args.get("before"))
    search = str_param("q", request.args.get("q"))
    with data.reading(db.engine) as conn:
        rows, next_before = data.batches(conn, before=before, search=search)
    return page("batches.html", batches=rows, next_before=next_before, q=search or "")


@bp.get("/schedules")
def schedules_page():
    rows = schedules.list_schedules(db.engine)
    with data.reading(db.engine) as conn:
        last = data.last_jobs(conn, [r["last_job_id"] for r in rows if r["last_job_id"]])
    return page("schedules.html", schedules=rows, last=last)


@bp.post("/schedules/<path:name>/<any(enable, disable):switch>")
def switch_schedule(name: str, switch: str):
    row = schedules.set_enabled(db.engine, name, switch == "enable")
    if row is None:
        raise Refused(404, "Not found", f"No schedule named {name!r}.")
    bulk.log.record(db.engine, _actor(), f"schedule.{switch}", {"name": name})
    return redirect(url_for("dashboard.schedules_page"))


@bp.get("/controls")
def controls_page():
    with data.reading(db.engine) as conn:
        features = flow_control.features(conn)
        pauses = flow_control.list_pauses(conn) if features.pauses else []
        limits = flow_control.list_limits(conn) if features.limits else []
    return page("controls.html", features=features, pauses=pauses, limits=limits,
                limit_fields=flow_control.LIMIT_FIELDS)


def _need(feature: str):
    with db.engine.connect() as conn:
        if not getattr(flow_control.features(conn), feature):
            raise Refused(501, "Not available", f"{feature.replace('_', ' ').capitalize()} are not available on "
                                                "this database yet (they come with tenant flow control).")


@bp.post("/pauses")
def add_pause():
    _need("pauses")
    job_type = str_param("type", request.form.get("type"))
    store_id = str_param("store_id", request.form.get("store_id"))
    if job_type is None and store_id is None:
        raise Refused(400, "Bad request", "Name a type, a store, or both: a pause of everything is not offered.")
    try:
        with db.engine.begin() as conn:
            flow_control.add_pause(conn, job_type, store_id, _actor())
    except flow_control.InvalidFlowInput as exc:
        raise Refused(400, "Bad request", exc.message) from None
    return redirect(url_for("dashboard.controls_page"))


@bp.post("/pauses/<int:pause_id>/remove")
def remove_pause(pause_id: int):
    _need("pauses")
    with db.engine.begin() as conn:
        removed = flow_control.remove_pause(conn, pause_id, _actor())
    if not removed:
        raise Refused(404, "Not found", f"No pause {pause_id}.")
    return redirect(url_for("dashboard.controls_page"))


@bp.post("/limits")
def put_limit():
    _need("limits")
    store_id = str_param("store_id", request.form.get("store_id"))
    job_type = str_param("type", request.form.get("type"))
    values = {}
    for name in flow_control.LIMIT_FIELDS:
        raw = request.form.get(name)
        values[name] = int_param(name, raw, 0, 10**12)  # the ranges: flow.limits.validate, as PUT /limits
    if all(v is None for v in values.values()):
        raise Refused(400, "Bad request", "Give at least one limit or a weight.")
    try:
        with db.engine.begin() as conn:
            flow_control.put_limit(conn, store_id, job_type, values, _actor())
    except flow_control.InvalidFlowInput as exc:
        raise Refused(400, "Bad request", exc.message) from None
    return redirect(url_for("dashboard.controls_page"))


@bp.post("/limits/remove")
def remove_limit():
    _need("limits")
    store_id = str_param("store_id", request.form.get("store_id"))
    job_type = str_param("type", request.form.get("type"))
    with db.engine.begin() as conn:
        removed = flow_control.delete_limit(conn, store_id, job_type, _actor())
    if not removed:
        raise Refused(404, "Not found", "No such limit.")
    return redirect(url_for("dashboard.controls_page"))


@bp.get("/actions")
def actions_page():
    before = int_param("before", request.args.get("before"), 1, MAX_JOB_ID)
    done = int_param("done", request.args.get("done"), 1, MAX_JOB_ID)
    with data.reading(db.engine) as conn:
        rows = bulk.log.recent(conn, limit=data.PAGE, before=before)
    return page("actions.html", actions=rows, done=done,
                next_before=rows[-1]["id"] if len(rows) == data.PAGE else None)


def query_string(values: dict) -> str:
    return urlencode({k: v for k, v in values.items() if v not in (None, "")})


bp.add_app_template_filter(query_string, "qs")
