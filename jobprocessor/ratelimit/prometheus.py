"""The shared limiter's figures as Prometheus metric families, read at scrape time from PostgreSQL (the state is
shared by every process, so any worker answering /metrics reports the same figures).

`collect()` needs an app context (it reads the app's engine and settings); register it wherever /metrics gathers
its scrape-time collectors.
"""
from __future__ import annotations

from typing import Iterator, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import rate_limiter_stats

PREFIX = "jobprocessor_openai_ratelimit"


def families(stats: dict) -> Iterator[Metric]:
    """Metric families from one rate_limiter_stats() dict."""
    def by_unit(name: str, doc: str, requests: Optional[float], tokens: Optional[float]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["unit"])
        for unit, value in (("requests", requests), ("tokens", tokens)):
            if value is not None:
                family.add_metric([unit], float(value))
        return family

    window = stats["window_s"]
    yield by_unit("used", f"Requests and tokens used in the last {window} s, all processes together",
                  stats["requests_used"], stats["tokens_used"])
    yield by_unit("charged", f"Tokens charged in the last {window} s: what OpenAI counts against its tokens/min",
                  None, stats["tokens_charged"])
    yield by_unit("limit", "The per-minute budget (OPENAI_RPM, OPENAI_TPM)",
                  stats["requests_limit"], stats["tokens_limit"])
    yield by_unit("utilisation_ratio", f"Charged in the last {window} s over the per-minute limit",
                  stats["requests_utilisation_pct"] / 100.0, stats["tokens_utilisation_pct"] / 100.0)
    yield by_unit("in_flight", "Reserved for calls not yet settled", stats["requests_in_flight"],
                  stats["tokens_in_flight"])
    yield by_unit("server_remaining", "What OpenAI said remains (x-ratelimit-remaining-*), last seen",
                  stats["server_remaining_requests"], stats["server_remaining_tokens"])
    yield GaugeMetricFamily(f"{PREFIX}_waiting_jobs", "Jobs held back by the limiter (sleeping for a slot or "
                                                      "rescheduled)", value=stats["waiting_jobs"])
    yield GaugeMetricFamily(f"{PREFIX}_hold_seconds", "Seconds until calls may start again after a 429",
                            value=stats["hold_s"])
    yield GaugeMetricFamily(f"{PREFIX}_next_slot_seconds", "Seconds until the budget has room for one more call",
                            value=stats["next_slot_s"])
    yield GaugeMetricFamily(f"{PREFIX}_error_streak", "Consecutive 5xx answers from OpenAI",
                            value=stats["error_streak"])
    yield CounterMetricFamily(f"{PREFIX}_throttled", "429 answers from OpenAI", value=stats["throttled_total"])
    yield CounterMetricFamily(f"{PREFIX}_calls", "Calls settled", value=stats["settled_total"])
    yield CounterMetricFamily(f"{PREFIX}_tokens_used", "Tokens used (settled usage)",
                              value=stats["used_tokens_total"])
    caps = GaugeMetricFamily("jobprocessor_openai_output_cap_tokens", "max_completion_tokens calls send now, per "
                                                                      "job type and model", labels=["type", "model"])
    for row in stats.get("output_caps", ()):
        caps.add_metric([row["job_type"], row["model"]], float(row["max_completion_tokens"]))
    yield caps


def collect() -> Iterator[Metric]:
    """The scrape-time collector: `register_scrape_collector(collect)`."""
    yield from families(rate_limiter_stats())
