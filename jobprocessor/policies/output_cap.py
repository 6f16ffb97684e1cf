"""The output cap a chat call sends (max_completion_tokens), from what the answers of its job type and model really
used. Pure.

OpenAI counts a request's whole cap against tokens/min when it arrives, whatever the answer then uses
(policies/tokens.py), and advises setting it close to the expected answer. Too high, and the budget pays for tokens
no answer uses (a 4,096 cap with answers of a few hundred tokens holds a 450K-TPM account to about 110 requests/min).
Too low, and answers are cut off (finish_reason "length") and must be asked again: a whole request and its latency.
So the cap follows a high percentile of the answers seen, with a margin:

    cap = ceil(p99(completion tokens) x MARGIN), within [min(MIN_CAP, max_output), max_output]
    max_output = OPENAI_MAX_OUTPUT_TOKENS (an upper bound); until MIN_ANSWERS answers are known: max_output

over a decaying histogram of the answers' completion_tokens (reasoning included) per (job type, model), shared by
every process and instance (ratelimit/output_stats.py).

Why these choices:
- p99 plus 20 %: a cut-off costs a whole request, an unused token only a token; at p99 x 1.2 about one answer in a
  few hundred is cut off, and a cap 20 % above the answers costs far less of tokens/min than one of 4,096.
- Bins an eighth of an octave wide (9 %); every answer counts at its bin's top edge, so the percentile is never
  below the true one of the answers recorded (it errs up to 9 % high).
- Decay by answers, not by time: each answer multiplies the weight of those before it by 1 - 1/WINDOW_ANSWERS, so
  the last few hundred answers carry the weight and p99 is about the 5th largest of the last 500. Answer sizes follow
  the work (products, prompts, model), not the clock: a quiet night forgets nothing, and a type called twice a day
  keeps as many answers in view as a busy one. After FORGET_ANSWERS answers of a new size, no earlier answer is
  left in the percentile (tests/policies/test_output_cap.py checks it, with the bounds and monotonicity).
- A cut-off answer counts at its cap, a lower bound of what it needed; while there are few answers, or once
  cut-offs are more than 1 % of the recent ones, that lifts the cap above it. Its retry's answer counts at its real
  size. Retries with escalated caps are not counted as cut-offs, so one answer that never fits moves the shared cap
  at most once per attempt.

retry_cap: a cut-off answer is asked again with twice its cap (or the shared cap, if that grew further), never
above max_output; at max_output there is no retry and the answer fails as before. Doubling reaches max_output in a
few steps (256 to 4,096: 4) while charging at most twice what the answer needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

PERCENTILE = 0.99
MARGIN = 1.2
MIN_CAP = 256  # no cap below this (unless OPENAI_MAX_OUTPUT_TOKENS is lower): short answers vary the most
MIN_ANSWERS = 20  # until this many answers are known, the cap is max_output
WINDOW_ANSWERS = 500
DECAY = 1.0 - 1.0 / WINDOW_ANSWERS
# answers of one size after which every earlier answer is out of the percentile: DECAY**n <= 1 - PERCENTILE
FORGET_ANSWERS = math.ceil(math.log(1.0 - PERCENTILE) / math.log(DECAY))
FIRST_EDGE = 16  # bin 0 holds answers of up to 16 tokens
BINS_PER_OCTAVE = 8
MAX_BIN = 24 * BINS_PER_OCTAVE  # 16 x 2^24 tokens: beyond any model's output
NEGLIGIBLE = 1e-12  # weights decayed below this are dropped, so a row does not keep every size it ever saw


@dataclass(frozen=True)
class OutputStats:
    """The answers seen for one (job type, model): decayed weight per bin, and plain counts."""

    weights: tuple = ()
    answers: int = 0
    cut_offs: int = 0


def bin_top(index: int) -> int:
    """The largest answer (tokens) bin `index` holds; strictly increasing."""
    return math.ceil(FIRST_EDGE * 2.0 ** (index / BINS_PER_OCTAVE))


def bin_of(tokens: int) -> int:
    """The bin of an answer of `tokens`: the first whose top edge is at least `tokens`."""
    if tokens <= FIRST_EDGE:
        return 0
    index = min(MAX_BIN, max(0, math.ceil(BINS_PER_OCTAVE * math.log2(tokens / FIRST_EDGE))))
    while index > 0 and bin_top(index - 1) >= tokens:
        index -= 1
    while index < MAX_BIN and bin_top(index) < tokens:
        index += 1
    return index


def observe(stats: OutputStats, completion_tokens: int, *, cut_off: bool = False) -> OutputStats:
    """Record one answer of `completion_tokens` (a cut-off one: at least that many)."""
    index = bin_of(max(0, int(completion_tokens)))
    weights = [w * DECAY for w in stats.weights]
    weights += [0.0] * (index + 1 - len(weights))
    weights[index] += 1.0
    weights = [w if w >= NEGLIGIBLE else 0.0 for w in weights]
    while weights and weights[-1] == 0.0:
        weights.pop()
    return OutputStats(tuple(weights), stats.answers + 1, stats.cut_offs + (1 if cut_off else 0))


def percentile_tokens(stats: OutputStats, q: float = PERCENTILE) -> Optional[int]:
    """The q-th percentile of the recorded answers, at its bin's top edge (None: nothing recorded)."""
    total = sum(stats.weights)
    if total <= 0:
        return None
    target, cumulative = q * total, 0.0
    for index, weight in enumerate(stats.weights):
        cumulative += weight
        if cumulative >= target:
            return bin_top(index)
    return bin_top(len(stats.weights) - 1)  # rounding: the sum of the parts fell short of the total


def output_cap(stats: OutputStats, max_output: int) -> int:
    """The max_completion_tokens to send (see the module docstring)."""
    max_output = max(1, int(max_output))
    if stats.answers < MIN_ANSWERS:
        return max_output
    p = percentile_tokens(stats)
    if p is None:
        return max_output
    return max(min(MIN_CAP, max_output), min(max_output, math.ceil(p * MARGIN)))


def retry_cap(previous_cap: int, shared_cap: int, max_output: int) -> Optional[int]:
    """The cap to ask again with after an answer was cut off at `previous_cap`; None at max_output (no retry)."""
    if previous_cap >= max_output:
        return None
    return min(max_output, max(2 * previous_cap, shared_cap))
