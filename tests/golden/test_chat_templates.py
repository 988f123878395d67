"""Golden test: rigtune's Jinja engine against transformers' apply_chat_template
on real published chat templates (see chat_template_corpus.py: taken at test
time from the llama-cpp-python sdist on PyPI, never stored here).

For every template and conversation (plain, multi-turn with a system
prompt, tool calls with a tool turn and the tools list, a generation
prompt, an extra variable), with and without add_generation_prompt:
  * the text rigtune renders equals transformers' render_jinja_template
    (what apply_chat_template calls) byte for byte;
  * the assistant spans equal transformers' {% generation %} indices where
    the template has them, else the rule of Note [Assistant spans] applied
    to transformers' own renderings;
  * where transformers raises (raise_exception, undefined values), rigtune
    fails too, with an error naming the template line.
"""
import json
import os
import re
import subprocess
import tempfile

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

import chat_template_corpus

TOOL = os.environ.get("RIGTUNE_DATA_GOLDEN_TOOL")
BOS, EOS = "<s>", "</s>"

try:
    CORPUS = chat_template_corpus.fetch()
    TEMPLATES = sorted(f for f in os.listdir(CORPUS) if f.endswith(".jinja"))
except Exception as e:  # offline: say so instead of failing the suite
    CORPUS, TEMPLATES, OFFLINE = None, [], str(e)

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}]
TOOL_CALL = {"id": "call12345", "type": "function",
             "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}

# Templates rigtune renders differently today, with the reason; xfail(strict)
# so that fixing one shows up.
KNOWN_GAPS = {
    "ByteDance-Seed-OSS.jinja": "dict literals with integer keys ({0: ..., 512: ...})",
}

CONVERSATIONS = {
    "single": ([{"role": "user", "content": "Hello world!"},
                {"role": "assistant", "content": "Hello there, how can I help?"}], None, {}),
    "system_multi_turn": ([
        {"role": "system", "content": "You are terse. Réponds en français."},
        {"role": "user", "content": "  What is 2+2?\n"},
        {"role": "assistant", "content": "\n4 \n"},
        {"role": "user", "content": "And 3+3? 日本語で"},
        {"role": "assistant", "content": "6 😀 — ça va"}], None, {}),
    "tools": ([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
        {"role": "tool", "content": "{\"temperature\": 21}", "tool_call_id": "call12345",
         "name": "get_weather"},
        {"role": "assistant", "content": "It is 21 °C in Paris."}], TOOLS, {}),
    "prompt_only": ([{"role": "user", "content": "Write a haiku."}], None, {}),
    "kwargs": ([{"role": "user", "content": "Think briefly: 1+1?"},
                {"role": "assistant", "content": "2"}], None, {"enable_thinking": False}),
}


def transformers_render(template, messages, tools, kwargs, add_generation_prompt):
    """(text, generation char spans) or the exception transformers raised."""
    try:
        texts, indices = render_jinja_template(
            conversations=[messages], tools=tools, chat_template=template,
            add_generation_prompt=add_generation_prompt, return_assistant_tokens_mask=True,
            bos_token=BOS, eos_token=EOS, **kwargs)
        return texts[0], indices[0]
    except Exception as e:  # noqa: BLE001 - any template error is an expected failure
        return e


def byte_offset(text, char_index):
    return len(text[:char_index].encode("utf-8"))


def expected(template, messages, tools, kwargs, add_generation_prompt):
    """{"text", "spans"} or {"error"} as rigtune must produce it."""
    full = transformers_render(template, messages, tools, kwargs, add_generation_prompt)
    if isinstance(full, Exception):
        return {"error": str(full)}
    text, generation = full
    if re.search(r"\{%-?\s*generation\s*-?%\}", template):
        spans = [[byte_offset(text, b), byte_offset(text, e)] for b, e in generation if e > b]
        return {"text": text, "spans": spans}
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = transformers_render(template, messages[:i], tools, kwargs, True)
        through = transformers_render(template, messages[:i + 1], tools, kwargs, False)
        if isinstance(before, Exception) or isinstance(through, Exception):
            return {"error": "prefix rendering raised"}
        if not through[0].startswith(before[0]) or not text.startswith(through[0]):
            return {"error": "renders earlier turns differently"}
        if len(through[0]) > len(before[0]):
            spans.append([len(before[0].encode("utf-8")), len(through[0].encode("utf-8"))])
    return {"text": text, "spans": spans}


def rigtune_render(template_path, cases):
    with tempfile.TemporaryDirectory() as tmp:
        request, reply = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
        with open(request, "w") as f:
            json.dump({"bos_token": BOS, "eos_token": EOS, "cases": cases}, f)
        run = subprocess.run([TOOL, "template", template_path, request, reply],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        with open(reply) as f:
            return json.load(f)["results"]


@pytest.mark.skipif(TOOL is None, reason="RIGTUNE_DATA_GOLDEN_TOOL not set (run through ctest)")
@pytest.mark.parametrize("name", TEMPLATES or [pytest.param(
    "none", marks=pytest.mark.skip(reason="chat template corpus unavailable (offline?)"))])
def test_template_renders_like_transformers(name, request):
    if name in KNOWN_GAPS:
        request.applymarker(pytest.mark.xfail(reason=KNOWN_GAPS[name], strict=True))
    path = os.path.join(CORPUS, name)
    with open(path, encoding="utf-8") as f:
        template = f.read()
    cases, wanted = [], []
    for conversation, (messages, tools, kwargs) in CONVERSATIONS.items():
        for add_generation_prompt in (False, True):
            cases.append({"messages": messages, "tools": tools, "kwargs": kwargs,
                          "add_generation_prompt": add_generation_prompt})
            wanted.append((conversation, add_generation_prompt,
                           expected(template, messages, tools, kwargs, add_generation_prompt)))
    results = rigtune_render(path, cases)
    for (conversation, add_generation_prompt, want), got in zip(wanted, results):
        where = f"{name} [{conversation}, add_generation_prompt={add_generation_prompt}]"
        if "error" in want:
            assert "error" in got, f"{where}: transformers raised ({want['error']}), rigtune did not"
            assert re.search(r"line \d+:|earlier turns", got["error"]), f"{where}: {got['error']}"
            continue
        assert "error" not in got, f"{where}: {got.get('error')}"
        assert got["text"] == want["text"], where
        assert got["spans"] == want["spans"], where


def test_corpus_covers_fifteen_families():
    if not TEMPLATES:
        pytest.skip(f"chat template corpus unavailable (offline?): {OFFLINE}")
    families = {re.split(r"[-_.]", t.lower())[0] for t in TEMPLATES}
    assert len(TEMPLATES) >= 15 and len(families) >= 10, families
