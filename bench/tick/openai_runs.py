"""`cadence` and `headline`: a `product.optimize` backlog under a once-a-minute cron, against a fake OpenAI that
allows 500 requests/min and 500,000 tokens/min (OpenAI's tier-1 limits for gpt-5-mini; the project is told its
defaults, 450 and 450,000), answers in 4-12 s and counts tokens the way the provider does (--accounting).

- cadence (issue 10: ">= 95 % of 450 requests/min from the second minute on, 0 x 429, no job failed"): a backlog
  that does not run dry, `--minutes` cron minutes; per minute the requests the fake served (its own log), 429s,
  tokens, jobs completed; per tick its duration and counts.
- headline (the seed's "5,000 product rewrites in 11-12 minutes"): 5,000 jobs from 100 stores (50 each); the time
  from the first tick until the last job is done (floor 5,000 / 450 = 11.1 min), or, at --max-minutes, the jobs done
  by then and the time that rate extrapolates to.

The cron is the README's: `curl -fsS -X GET $URL/process-pending -H "Authorization: Bearer $CRON_SECRET" --max-time
70` once a minute, no parameters (the server's defaults for limit and budget_s). --method POST is the crontab/Render
line. --scale k runs k times faster with every ratio kept (see common.Scale); figures are printed per cron minute.
"""
from __future__ import annotations

import math
import time

from sqlalchemy import text

from .common import (Charges, Cron, LoadSampler, RunInfo, Scale, completed_times, database_url, default,
                     describe_accounting, enqueue, fresh_schema, make_fake, parse_env, parse_fake_options,
                     per_minute, provider_minutes, resolve_accounting, server, status_counts, tick_record, tick_row,
                     unfinished, write_results)
from .products import backlog, describe

FAKE_RPM, FAKE_TPM = 500, 500_000
LATENCY_S = (4.0, 12.0)
CADENCE_S = 60.0
MAX_TIME_S = 120.0  # the README's --max-time (budget_s 90 + grace + margin)


def add_common_arguments(parser) -> None:
    parser.add_argument("--scale", type=float, default=1.0,
                        help="k: cadence, latency and budgets / k, rate limits x k, ratios kept (default 1: real time)")
    parser.add_argument("--accounting", choices=("auto", "openai", "max_tokens", "completion"), default="auto",
                        help="how the fake charges tokens: openai = accounting=\"openai\" of "
                             "tests/support/fake_openai.py (max(max_completion_tokens, input chars/4) on arrival, "
                             "no refund); max_tokens = "
                             "charge_max_tokens=True (prompt + max_completion_tokens on arrival, no refund); auto "
                             "(default) = openai when the fake has it, else max_tokens")
    parser.add_argument("--fake-rpm", type=int, default=FAKE_RPM, help="the provider's requests/min (default 500)")
    parser.add_argument("--fake-tpm", type=int, default=FAKE_TPM, help="the provider's tokens/min (default 500000)")
    parser.add_argument("--latency", type=float, nargs=2, default=LATENCY_S, metavar=("LO", "HI"),
                        help="the fake's answer time, uniform, s (default 4 12)")
    parser.add_argument("--fake-option", action="append", default=[], metavar="NAME=VALUE",
                        help="extra FakeOpenAI keyword (JSON value), e.g. a realistic answer size option")
    parser.add_argument("--method", choices=("GET", "POST"), default="GET",
                        help="GET (Vercel Cron, default) or POST (the README's crontab/Render/Kubernetes lines)")
    parser.add_argument("--query", default="", help="query string for the cron URL (default none: the README's "
                                                    "recipes send no parameters)")
    parser.add_argument("--seed", type=int, default=10)


def add_cadence_arguments(parser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--minutes", type=int, default=5, help="cron minutes to run (default 5)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="backlog size (default: 1.3 x 450/min x minutes, so it never runs dry)")
    parser.add_argument("--stores", type=int, default=30)


def add_headline_arguments(parser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--stores", type=int, default=100)
    parser.add_argument("--max-minutes", type=float, default=20,
                        help="stop after this many cron minutes and extrapolate (default 20)")


def _minute_table(minutes: dict, completed: list[int], rpm: int) -> list[str]:
    lines = ["  minute  requests  % of {0}   429  other-err  usage tok  charged tok  jobs done".format(rpm)]
    for m, served in enumerate(minutes["requests"]):
        charged = minutes["charged_tokens"][m] if minutes["charged_tokens"] else None
        lines.append(f"  {m + 1:>6}  {served:>8}  {served / rpm:>7.1%}  {minutes['throttled_429'][m]:>4}  "
                     f"{minutes['other_errors'][m]:>9}  {minutes['usage_tokens'][m]:>9,}  "
                     f"{'-' if charged is None else f'{charged:,}':>11}  {completed[m]:>9}")
    return lines


def _failed_errors(engine, n: int = 3) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(text(
            "SELECT left(last_error, 300) FROM jobs WHERE status = 'failed' ORDER BY id LIMIT :n"), {"n": n})]


def run(args, command: str, case: str) -> int:
    scale = Scale(args.scale)
    accounting = resolve_accounting(args.accounting)
    rpm = int(default("OPENAI_RPM"))  # what the project is told, per (cron) minute
    minute_s = scale.s(CADENCE_S)
    if case == "cadence":
        n_jobs = args.jobs or math.ceil(1.3 * rpm * args.minutes)
        jobs = backlog(n_jobs, args.stores, seed=args.seed, skew=0.7)
    else:
        jobs = backlog(args.jobs, args.stores, seed=args.seed, skew=0.0)
    url = database_url()
    engine = fresh_schema(url)
    fake = make_fake(scale, accounting, tuple(args.latency), args.fake_rpm, args.fake_tpm,
                     parse_fake_options(args.fake_option))
    charges = Charges(fake)
    extra_env = parse_env(args.env)
    print(f"{case}: {describe(jobs)}", flush=True)
    print(f"  provider: fake OpenAI, {args.fake_rpm} requests/min and {args.fake_tpm:,} tokens/min per cron minute, "
          f"answers in {args.latency[0]:g}-{args.latency[1]:g} s; {describe_accounting(accounting)}")
    print(f"  project: OPENAI_RPM/OPENAI_TPM at their defaults ({rpm}, {int(default('OPENAI_TPM')):,}) per cron "
          f"minute; limit and budget_s: the server's defaults ({default('JOBS_MAX_PER_RUN')}, "
          f"{default('JOBS_MAX_RUNTIME_S'):g} s) unless --query; gunicorn {args.workers} x {args.threads}; "
          f"extra env {extra_env or '-'}")
    for line in scale.describe():
        print("  " + line)
    result: dict = {"run": RunInfo(command).as_dict(), "case": case, "scale": scale.k,
                    "minute_s": minute_s, "accounting": accounting,
                    "provider": {"rpm": args.fake_rpm, "tpm": args.fake_tpm, "latency_s": list(args.latency),
                                 "options": parse_fake_options(args.fake_option)},
                    "project": {"OPENAI_RPM": rpm, "OPENAI_TPM": int(default("OPENAI_TPM")),
                                "JOBS_MAX_PER_RUN": default("JOBS_MAX_PER_RUN"),
                                "JOBS_MAX_RUNTIME_S": default("JOBS_MAX_RUNTIME_S"), "env": extra_env,
                                "scaled_env": {k: v for k, v in scale.server_env().items()}},
                    "backlog": describe(jobs), "gunicorn": f"{args.workers}x{args.threads}"}
    with LoadSampler() as load, fake, server(url, {"OPENAI_API_KEY": fake.api_key, "OPENAI_BASE_URL": fake.base_url,
                                                   **extra_env}, args.workers, args.threads, scale) as srv:
        began = time.monotonic()
        enqueue(srv.base, jobs)
        print(f"  enqueued {len(jobs):,} jobs through POST /jobs in {time.monotonic() - began:.1f} s", flush=True)
        cron = Cron(srv.base, minute_s, scale.s(MAX_TIME_S), method=args.method, query=args.query)
        print(f"  cron: {cron.shown()}", flush=True)
        # the cron fires no tick past the run's last minute (a capped headline: none at the cap itself)
        ticks = args.minutes if case == "cadence" else math.ceil(args.max_minutes)
        t0 = cron.start(ticks)
        done_at_cap, capped, finished_at = None, False, None
        minute = 0
        while True:
            time.sleep(min(1.0, minute_s / 10))
            now = time.time()
            if now - t0 >= (minute + 1) * minute_s:
                minute += 1
                calls = fake.snapshot()
                served = sum(1 for c in calls if c.status == 200 and t0 + (minute - 1) * minute_s <= c.at
                             < t0 + minute * minute_s)
                left = unfinished(engine)
                print(f"  minute {minute:>3}: {served:>4} requests served, {fake.count(429)} x 429 so far, "
                      f"{len(jobs) - left:,} of {len(jobs):,} jobs done", flush=True)
                if case == "cadence" and minute >= args.minutes:
                    break
                if case == "headline" and minute >= args.max_minutes:
                    done_at_cap, capped = len(jobs) - left, True
                    break
            if case == "headline" and unfinished(engine) == 0:
                finished_at = time.time()
                break
        stopped = time.time()
        cron.stop()
        ticks_done = cron.finished()
        if case == "cadence" or capped:
            minutes_n = minute
        else:  # finished inside a minute: that minute counts, partial
            minutes_n = max(1, math.ceil(((finished_at or stopped) - t0) / minute_s))
        provider = provider_minutes(fake, charges, t0, minute_s, minutes_n)
        total_429, calls = fake.count(429), fake.snapshot()
    completed = completed_times(engine)
    done_per_minute = per_minute(completed, t0, minute_s, minutes_n)
    statuses = status_counts(engine)
    failed = statuses.get("failed", 0)
    print()
    print("\n".join(_minute_table(provider, done_per_minute, rpm)))
    print("  ticks (duration until curl exited, the answer's counts):")
    for tick in ticks_done:
        print(tick_row(tick, t0))
    # full minutes after the first (a headline run that finished ends inside a partial minute)
    from_second = provider["requests"][1:] if case == "cadence" or capped else provider["requests"][1:-1]
    share = [served / rpm for served in from_second]
    ok_requests = [c for c in calls if c.status == 200]
    charged_mean = (sum(v for _, v in charges.items) / len(charges.items)) if charges.items else None
    result.update({
        "t0_unix": t0, "minutes": minutes_n, "per_minute": {**provider, "jobs_completed": done_per_minute},
        "ticks": [tick_record(t, t0) for t in ticks_done], "statuses_after": statuses, "jobs_failed": failed,
        "failed_errors": _failed_errors(engine) if failed else [], "throttled_429_total": total_429,
        "requests_total": len(ok_requests), "charged_tokens_per_request_mean": charged_mean,
        "share_of_rpm_from_minute_2": {"min": round(min(share), 4) if share else None,
                                       "mean": round(sum(share) / len(share), 4) if share else None},
        "load_average": load.summary(),
    })
    print(f"  requests served {len(ok_requests):,}, 429s {total_429}, jobs failed {failed}; jobs now {statuses}")
    if charged_mean:
        print(f"  the fake charged {charged_mean:,.0f} tokens per request on average: its {args.fake_tpm:,} tokens/min "
              f"serve at most {args.fake_tpm / charged_mean:,.0f} requests/min")
    if share:
        label = "minutes 2.." + str(minutes_n) if case == "cadence" else "full minutes after the first"
        print(f"  from the second minute on ({label}): {min(share):.1%} (worst) / {sum(share) / len(share):.1%} "
              f"(mean) of {rpm}/min; target >= 95 % each minute, 0 x 429, no job failed")
    if case == "headline":
        floor_min = len(jobs) / rpm
        if finished_at is not None and completed:
            took = max(completed) - t0
            result.update(finished=True, seconds_to_finish=round(took, 1),
                          cron_minutes_to_finish=round(took / minute_s, 2))
            print(f"  all {len(jobs):,} jobs done {took:.1f} s after the first tick = {took / minute_s:.2f} cron "
                  f"minutes (floor {floor_min:.1f}; target <= 12)")
        else:
            # the rate after the first minute (the first tick's wave is special), extrapolated to the whole backlog
            steady = done_per_minute[1:] or done_per_minute
            rate = sum(steady) / len(steady) if steady else 0.0
            done = done_at_cap if done_at_cap is not None else len(completed)
            eta = (len(jobs) / rate) if rate else float("inf")
            result.update(finished=False, capped_at_cron_minutes=args.max_minutes, jobs_done_at_cap=done,
                          steady_jobs_per_cron_minute=round(rate, 2),
                          extrapolated_cron_minutes_to_finish=round(eta, 1) if math.isfinite(eta) else None)
            print(f"  stopped at {args.max_minutes:g} cron minutes: {done:,} of {len(jobs):,} jobs done; "
                  f"{rate:.1f} jobs per cron minute after the first -> all {len(jobs):,} in about {eta:,.0f} cron "
                  f"minutes ({eta / 60:,.1f} h; floor {floor_min:.1f} min, target <= 12)")
    print(f"  {load.line()}")
    tag = args.tag + (f"_x{scale.k:g}" if scale.k != 1 else "")
    print(f"  results: {write_results(case, tag, result)}")
    return 0
