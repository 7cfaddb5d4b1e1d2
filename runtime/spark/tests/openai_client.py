"""Drives a running veritas-spark through the official `openai` Python client, as a user
would, and prints one JSON line of what it saw. Run by tests/openai_python.rs:

    openai_client.py BASE_URL MODEL ALIAS

Every check is an assert: a failure exits non-zero with the assertion and what was seen.
"""

import json
import sys

import openai

base_url, model, alias = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
seen = {"openai": openai.__version__}

ids = [m.id for m in client.models.list().data]
assert ids == [model, alias], ids
seen["models"] = ids

# A one-word chat with no max_tokens: the answer fills what the window leaves.
chat = client.chat.completions.create(
    model=alias, messages=[{"role": "user", "content": "Hello"}]
)
assert chat.model == alias, chat.model
assert chat.choices[0].message.role == "assistant"
assert chat.choices[0].finish_reason in ("length", "stop"), chat.choices[0].finish_reason
assert chat.usage.completion_tokens > 1, chat.usage
seen["chat_usage"] = chat.usage.model_dump()

# Greedy (temperature 0) is deterministic; a seed reproduces a sampled answer.
def complete(**kw):
    return client.completions.create(model=model, prompt="Hello", max_tokens=16, **kw)

greedy = complete(temperature=0).choices[0].text
assert complete(temperature=0).choices[0].text == greedy
sampled = [complete(temperature=1.5, seed=s).choices[0].text for s in (1, 2, 3, 4)]
assert complete(temperature=1.5, seed=3).choices[0].text == sampled[2]
assert len(set(sampled)) > 1, sampled
seen["sampled_distinct"] = len(set(sampled))

# A stop string, streamed: never sent, and the stream says why it ended.
ascii_pairs = [greedy[i : i + 2] for i in range(2, len(greedy) - 1)]
stop = next(p for p in ascii_pairs if p.isascii() and p.isprintable() and p.strip() == p)
text, reasons = "", []
for chunk in client.completions.create(
    model=model, prompt="Hello", max_tokens=16, temperature=0, stop=[stop], stream=True
):
    text += chunk.choices[0].text
    reasons.append(chunk.choices[0].finish_reason)
assert text == greedy[: greedy.index(stop)], (text, greedy, stop)
assert reasons[-1] == "stop", reasons
seen["stop"] = stop

# Errors as the client's own exception classes, our guide code in the body.
try:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=1_000_000
    )
    raise AssertionError("a max_tokens beyond the window was accepted")
except openai.BadRequestError as e:
    assert e.code == "context_length_exceeded", e.body
    assert e.body["veritas_code"] == "E4003", e.body
try:
    client.completions.create(model="no-such-model", prompt="Hi", max_tokens=1)
    raise AssertionError("an unknown model was served")
except openai.NotFoundError as e:
    assert e.code == "model_not_found", e.body
try:
    client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Hi"}],
        tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
    )
    raise AssertionError("tools were silently ignored")
except openai.BadRequestError as e:
    assert e.param == "tools", e.body
seen["errors"] = "ok"

print(json.dumps(seen))
