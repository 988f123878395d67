"""Golden test: chat rendering and label masks against transformers.

For each family a tokenizer is built in the test (see test_tokenizer_golden)
with a real chat template in its tokenizer_config.json (upstream strings for
Llama 3, Qwen2, Mistral v0.1 and the later Mistral template with a system
message; a common Alpaca chat template). For every conversation:
  * the text rendered by rigtune equals transformers' apply_chat_template;
  * the ids equal Hugging Face `tokenizers` on that text (no added specials:
    the template writes BOS itself);
  * the labels equal a reference masking written here: a token is a target
    when its first character lies in an assistant span, where the span of
    assistant message i is what apply_chat_template(messages[:i+1]) adds to
    apply_chat_template(messages[:i], add_generation_prompt=True); the first
    token is never a target (labels are shifted by the engine).
"""
import os

import pytest
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from test_tokenizer_golden import build_llama3, build_sentencepiece_bpe, run_tool

LLAMA3 = (
    r"{% set loop_messages = messages %}{% for message in loop_messages %}"
    r"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    r"+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    r"{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

QWEN2 = (
    r"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    r"{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    r"{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    r"{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

CHATML = (
    r"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    r" + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    r"{{ '<|im_start|>assistant\n' }}{% endif %}")

MISTRAL_V01 = (
    r"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    r"(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    r"user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    r"{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    r"{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and "
    r"assistant roles are supported!') }}{% endif %}{% endfor %}")

MISTRAL_SYSTEM = r"""{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

ALPACA = (
    r"{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    r"{{ message['content'] + '\n\n' }}{% elif message['role'] == 'user' %}"
    r"{{ '### Instruction:\n' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}"
    r"{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}"
    r"{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}")

SYSTEM = {"role": "system", "content": "You are a terse assistant. Réponds en français si possible."}
CONVERSATIONS = [
    [{"role": "user", "content": "Hello world!"}, {"role": "assistant", "content": "Hello there, how can I help?"}],
    [{"role": "user", "content": "  What is 2+2?\n"}, {"role": "assistant", "content": "\n4 \n"},
     {"role": "user", "content": "And 3+3? 日本語で"}, {"role": "assistant", "content": "6 😀 — ça va"}],
    [{"role": "user", "content": "def f(x):\n    return x"}, {"role": "assistant", "content": "```python\nprint(f(1))\n```"}],
    [{"role": "user", "content": "Special <|eot_id|> and </s> inside text"}, {"role": "assistant", "content": "ok"}],
]
WITH_SYSTEM = [[SYSTEM] + conv for conv in CONVERSATIONS]

FAMILIES = {
    # name: (builder, template, conversations expected to render)
    "llama3": (build_llama3, LLAMA3, CONVERSATIONS + WITH_SYSTEM),
    "qwen2": (build_llama3, QWEN2, CONVERSATIONS + WITH_SYSTEM),
    "chatml": (build_llama3, CHATML, CONVERSATIONS + WITH_SYSTEM),
    "mistral_v01": (lambda d, t: build_sentencepiece_bpe(d, legacy=True, chat_template=t), MISTRAL_V01,
                    CONVERSATIONS),
    "mistral_system": (lambda d, t: build_sentencepiece_bpe(d, legacy=False, chat_template=t),
                       MISTRAL_SYSTEM, CONVERSATIONS + WITH_SYSTEM),
    "alpaca": (lambda d, t: build_sentencepiece_bpe(d, legacy=False, chat_template=t), ALPACA,
               CONVERSATIONS + WITH_SYSTEM),
}


def _special_tokens(directory):
    """Adds the chat markers to the llama3-style builder's tokenizer (it already
    has the Llama 3 ones); ChatML markers become special added tokens."""
    import json
    path = os.path.join(directory, "tokenizer.json")
    spec = json.load(open(path))
    next_id = max(spec["model"]["vocab"].values()) + 1
    contents = {t["content"] for t in spec["added_tokens"]}
    for content in ("<|im_start|>", "<|im_end|>"):
        if content not in contents:
            spec["added_tokens"].append({"id": next_id, "content": content, "single_word": False,
                                         "lstrip": False, "rstrip": False, "normalized": False,
                                         "special": True})
            next_id += 1
    json.dump(spec, open(path, "w"), ensure_ascii=False)


@pytest.fixture(params=sorted(FAMILIES))
def family(request, tmp_path):
    builder, template, conversations = FAMILIES[request.param]
    directory = str(tmp_path / request.param)
    builder(directory, template) if request.param not in ("llama3", "qwen2", "chatml") else \
        build_llama3(directory, chat_template=template)
    _special_tokens(directory)
    return request.param, directory, conversations


def _reference(hf, fast, conversation, train_on_prompt=False):
    text = hf.apply_chat_template(conversation, tokenize=False)
    spans = []
    for i, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        before = hf.apply_chat_template(conversation[:i], tokenize=False, add_generation_prompt=True)
        upto = hf.apply_chat_template(conversation[:i + 1], tokenize=False)
        assert text.startswith(upto) and upto.startswith(before), "template is not prefix-stable"
        spans.append((len(before), len(upto)))
    enc = fast.encode(text, add_special_tokens=False)
    labels = []
    for k, (token_id, (begin, _)) in enumerate(zip(enc.ids, enc.offsets)):
        target = train_on_prompt or any(lo <= begin < hi for lo, hi in spans)
        labels.append(token_id if target and k > 0 else -100)
    return text, enc.ids, labels


@pytest.mark.parametrize("train_on_prompt", [False, True])
def test_rendering_and_labels_match_transformers(family, tmp_path, train_on_prompt):
    name, directory, conversations = family
    hf = AutoTokenizer.from_pretrained(directory)
    fast = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    got = run_tool("chat", directory, {"conversations": conversations, "train_on_prompt": train_on_prompt},
                   tmp_path)["results"]
    assert len(got) == len(conversations)
    for conversation, result in zip(conversations, got):
        text, ids, labels = _reference(hf, fast, conversation, train_on_prompt)
        assert "error" not in result, (name, result)
        assert result["text"] == text, name
        assert result["ids"] == ids, name
        assert result["labels"] == labels, name
        assert any(label != -100 for label in labels)


def test_mistral_v01_rejects_system_like_transformers(tmp_path):
    directory = build_sentencepiece_bpe(str(tmp_path / "m"), legacy=True, chat_template=MISTRAL_V01)
    hf = AutoTokenizer.from_pretrained(directory)
    with pytest.raises(Exception):
        hf.apply_chat_template(WITH_SYSTEM[0], tokenize=False)
    got = run_tool("chat", directory, {"conversations": [WITH_SYSTEM[0]]}, tmp_path)["results"]
    assert "error" in got[0]


def test_llama3_end_of_turn_token_is_trained(tmp_path):
    directory = build_llama3(str(tmp_path / "l3"), chat_template=LLAMA3)
    fast = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    eot = fast.token_to_id("<|eot_id|>")
    got = run_tool("chat", directory, {"conversations": [CONVERSATIONS[0]]}, tmp_path)["results"][0]
    assert got["ids"][-1] == eot and got["labels"][-1] == eot
