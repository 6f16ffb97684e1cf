"""Issue 10's figures: ticks under a real cron (see bench/tick/__main__.py and docs/BENCHMARKS.md)."""
