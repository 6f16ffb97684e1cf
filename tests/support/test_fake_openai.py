"""The fake OpenAI server's own promises (tests/support/fake_openai.py): its accounting modes and answer sizes, over
real HTTP with the official SDK. Other tests and the benchmarks rely on these numbers."""
from __future__ import annotations

import math

import openai
import pytest

from tests.support.fake_openai import FakeOpenAI, openai_charge, openai_input_chars

SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"],
          "additionalProperties": False}
RESPONSE_FORMAT = {"type": "json_schema", "json_schema": {"name": "p", "strict": True, "schema": SCHEMA}}


def ask(fake: FakeOpenAI, cap: int, text: str = "Rewrite: linen shirt", system: str = "You write copy. " * 30):
    client = openai.OpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    completion = client.chat.completions.create(model="m", messages=messages, response_format=RESPONSE_FORMAT,
                                                max_completion_tokens=cap)
    return completion, {"messages": messages, "response_format": RESPONSE_FORMAT, "max_completion_tokens": cap}


def test_input_characters_are_roles_contents_and_the_response_format():
    body = {"messages": [{"role": "system", "content": "abc"}, {"role": "user", "name": "bo",
                                                               "content": [{"type": "text", "text": "défg"}]}],
            "response_format": {"type": "json_object"}}
    assert openai_input_chars(body) == len("system") + 3 + len("user") + 2 + 4 + len('{"type":"json_object"}')
    assert openai_charge(dict(body, max_completion_tokens=5)) == math.ceil(openai_input_chars(body) / 4)
    assert openai_charge(dict(body, max_tokens=500)) == 500
    assert openai_charge(body) == 128_000  # no cap: the model's whole output


def test_openai_accounting_charges_the_larger_of_cap_and_input_on_arrival_and_never_gives_back():
    with FakeOpenAI(accounting="openai", tpm=600_000, completion_tokens=(100, 200), seed=3) as fake:
        completion, body = ask(fake, cap=1000)
        call, = fake.snapshot()
        assert call.charged == 1000 == openai_charge(body) and call.max_tokens == 1000
        assert 100 <= completion.usage.completion_tokens <= 200 < call.charged  # a short answer: nothing back
        assert fake.tokens.capacity - fake.tokens.level == pytest.approx(1000, abs=20)  # 10/s refill meanwhile
        small, body = ask(fake, cap=16, text="x" * 4000)  # the input is larger than the cap
        assert fake.snapshot()[-1].charged == math.ceil(openai_input_chars(body) / 4) > 1000
        assert small.choices[0].finish_reason == "length" and small.usage.completion_tokens == 16


def test_answers_that_need_more_than_the_cap_are_cut_off_there():
    with FakeOpenAI(accounting="openai", completion_tokens=300, long_answers=(1.0, (900, 950)), seed=1) as fake:
        cut, _ = ask(fake, cap=500)
        assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 500
        whole, _ = ask(fake, cap=1000)
        assert whole.choices[0].finish_reason == "stop" and 900 <= whole.usage.completion_tokens <= 950
        reasoning = whole.usage.completion_tokens_details.reasoning_tokens
        assert reasoning == whole.usage.completion_tokens - 11  # the rest is the visible JSON
        marked, _ = ask(fake, cap=700, text="Rewrite [[fake:need=650]]")
        assert marked.choices[0].finish_reason == "stop" and marked.usage.completion_tokens == 650
        assert [c.needed > c.max_tokens for c in fake.snapshot()] == [True, False, False]


def test_the_first_behaviours_stay_reachable():
    with FakeOpenAI() as usage, FakeOpenAI(charge_max_tokens=True) as max_tokens:
        assert usage.accounting == "usage" and max_tokens.accounting == "max_tokens"
        first, _ = ask(usage, cap=400)
        call = usage.snapshot()[0]
        assert call.charged == call.total_tokens == first.usage.total_tokens  # prompt + the completion produced
        assert first.usage.completion_tokens_details.reasoning_tokens == 32
        ask(max_tokens, cap=400)
        call = max_tokens.snapshot()[0]
        assert call.charged == call.prompt_tokens + 400
    with pytest.raises(ValueError):
        FakeOpenAI(accounting="tiktoken")
