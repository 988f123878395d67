"""Golden test: rigtune's C++ tokenizer against Hugging Face `tokenizers`.

Each tokenizer is built here with `tokenizers` (trained on a small in-test
corpus, then saved as tokenizer.json + tokenizer_config.json), so the test
needs no downloads:
  * llama3:  byte-level BPE, Llama 3 split regex, ignore_merges, special
             tokens, TemplateProcessing adding <|begin_of_text|>;
  * llama2:  Metaspace-style BPE with byte fallback and fused <unk>, legacy
             normalizer Prepend("▁") + Replace(" ", "▁");
  * mistral: the same model with the newer Metaspace pre-tokenizer
             (prepend_scheme "first", no split);
  * gpt2:    byte-level BPE with ByteLevel's own regex and add_prefix_space;
  * qwen2:   byte-level BPE with the Qwen2 split regex and an NFC normalizer;
  * qwen2_nfkc_lower: the same with Sequence[NFKC, Lowercase];
  * llama2_nfkd: the Llama 2 style BPE with NFKD before Prepend/Replace.
The C++ tool (data_golden_tool tokenize) encodes and decodes a multilingual
corpus; ids must be identical, decoded text too. Invalid UTF-8: the C++ side
gets raw bytes and replaces invalid sequences with U+FFFD, which is what
Python's bytes.decode("utf-8", errors="replace") hands to Hugging Face.
"""
import json
import os
import subprocess

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

TOOL = os.environ.get("RIGTUNE_DATA_GOLDEN_TOOL", "data_golden_tool")

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

TRAIN_CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's a test, isn't it? We'll see.",
    "Hello world! Hello there, hello again: HELLO WORLD.",
    "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i)\n",
    "Les élèves ont mangé des crêpes à la fête. Ça va très bien, merci!",
    "Der Bär läuft über die Straße. Größe, Übung, schön.",
    "数字 12345 and 3.14159, 2024-01-01, $100.",
    "<html><body class=\"main\">Text &amp; more</body></html>",
    "### Instruction:\nWrite a poem.\n\n### Response:\nRoses are red.",
    "Cafe\u0301 re\u0301sume\u0301 \u00c5ngstr\u00f6m \ufb01nance \uff28\uff49 \ud55c\uad6d\uc5b4 \u1112\u1161\u11ab",
] * 8

# Texts the tokenizers must agree on, as bytes (some are not valid UTF-8).
CORPUS = [
    b"Hello world",
    b"Hello world! It's a TEST; we'LL see, don't we?",
    b"",
    b" ",
    b"   leading and trailing spaces   ",
    b"tabs\tand\nnewlines\r\n\r\nand  double  spaces\n\n\n",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m".encode(),
    "e\u0301 combining acute, \u00df, \u0130stanbul".encode(),
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u4e2d\u6587\u5b57\u7b26".encode(),
    "\ud55c\uad6d\uc5b4 \u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0627\u0644\u0639\u0631\u0628\u064a\u0629 \u05e2\u05d1\u05e8\u05d9\u05ea".encode(),
    "emoji \U0001F600\U0001F389 family \U0001F468\u200d\U0001F469\u200d\U0001F467 flag \U0001F1EB\U0001F1F7".encode(),
    b"def f(x):\n    return x ** 2  # square\n\tif x:\n\t\tpass\n",
    b"numbers 1234567890 3.14159 -42 1e10 0x1F",
    "nbsp\u00a0here\u00a0\u00a0x nel\u0085y ideographic\u3000space em\u2003space".encode(),
    b"special <|begin_of_text|> and <|eot_id|> inline<|eot_id|>x",
    b"<s>[INST] Hi there [/INST] Hello</s>",
    b"a<s>b c</s>",
    b"invalid \xff byte, truncated \xe2\x82, overlong \xc0\xaf, surrogate \xed\xa0\x80 end \xf4\x90\x80\x80",
    b"\xe6\x97",
    "mixed: Stra\u00dfe 123abc ABC123 'quoted' \"double\" \u00abguillemets\u00bb \u2014 dash".encode(),
    b"    \n    ",
    "\u2581already\u2581metaspace \u0120G".encode(),
    b"x" * 300 + b" " + b"ab" * 200,
    "decomposed Cafe\u0301 re\u0301sume\u0301 A\u030angstro\u0308m n\u0303 q\u0323\u0307".encode(),
    "ligatures \ufb01nance \ufb02ow \ufb03ce \u0132 \u01c4 \u2460 \u00bd x\u00b2 \u3392 \u2103".encode(),
    "fullwidth \uff28\uff45\uff4c\uff4c\uff4f\uff01 \uff11\uff12\uff13 \uff21\uff22\uff23".encode(),
    "jamo \u1112\u1161\u11ab\u1100\u116e\u11a8 \u1100\u1161 syllables \ud55c\uad6d\uc5b4 \uac00\u11a8".encode(),
    "case \u0130STANBUL \u03a3\u039f\u03a6\u039f\u03a3 \u212a\u212b \u1e9b\u0323 \u0301lead \u0f73".encode(),
]


def _train_bpe(pre_tokenizer, normalizer, special_tokens, vocab_size, alphabet):
    tok = Tokenizer(models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    if pre_tokenizer is not None:
        tok.pre_tokenizer = pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special_tokens,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(TRAIN_CORPUS, trainer)
    return tok


def build_llama3(directory, chat_template=None):
    """A Llama 3 style tokenizer saved to `directory`; returns the directory."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]
    tok = _train_bpe(
        pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)]),
        None, specials, 600, pre_tokenizers.ByteLevel.alphabet())
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    tok.decoder = decoders.ByteLevel()
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    spec = json.load(open(os.path.join(directory, "tokenizer.json")))
    spec["model"]["ignore_merges"] = True
    json.dump(spec, open(os.path.join(directory, "tokenizer.json"), "w"), ensure_ascii=False)
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
              "tokenizer_class": "PreTrainedTokenizerFast"}
    if chat_template is not None:
        config["chat_template"] = chat_template
    json.dump(config, open(os.path.join(directory, "tokenizer_config.json"), "w"))
    return directory


def build_sentencepiece_bpe(directory, legacy, chat_template=None):
    """A Llama 2 (legacy=True) or Mistral style byte-fallback BPE."""
    meta = "\u2581"
    if legacy:
        normalizer = normalizers.Sequence([normalizers.Prepend(meta), normalizers.Replace(" ", meta)])
        pre = None
    else:
        normalizer = None
        pre = pre_tokenizers.Metaspace(replacement=meta, prepend_scheme="first", split=False)
    tok = _train_bpe(pre, normalizer, ["<unk>", "<s>", "</s>"], 400, [])
    tok.decoder = decoders.Sequence([decoders.Replace(meta, " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "tokenizer.json")
    tok.save(path)
    spec = json.load(open(path))
    # Byte-fallback tokens live in the model vocabulary right after the
    # specials, as in Llama 2; renumber the trained tokens after them.
    vocab = spec["model"]["vocab"]
    trained = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])
               if t not in ("<unk>", "<s>", "</s>")]
    new_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        new_vocab["<0x%02X>" % b] = len(new_vocab)
    for t in trained:
        new_vocab.setdefault(t, len(new_vocab))
    spec["model"]["vocab"] = new_vocab
    spec["model"].update(unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    for entry in spec["added_tokens"]:
        entry["id"] = new_vocab[entry["content"]]
    json.dump(spec, open(path, "w"), ensure_ascii=False)
    config = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
              "add_bos_token": True, "add_eos_token": False,
              "tokenizer_class": "PreTrainedTokenizerFast"}
    if chat_template is not None:
        config["chat_template"] = chat_template
    json.dump(config, open(os.path.join(directory, "tokenizer_config.json"), "w"))
    return directory


def build_gpt2(directory):
    tok = _train_bpe(pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True), None,
                     ["<|endoftext|>"], 500, pre_tokenizers.ByteLevel.alphabet())
    tok.decoder = decoders.ByteLevel()
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    json.dump({"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"},
              open(os.path.join(directory, "tokenizer_config.json"), "w"))
    return directory


def run_tool(command, model_dir, payload, tmp_path):
    source = tmp_path / f"{command}_in.json"
    target = tmp_path / f"{command}_out.json"
    source.write_text(json.dumps(payload))
    subprocess.run([TOOL, command, str(model_dir), str(source), str(target)], check=True)
    return json.loads(target.read_text())


def build_qwen2(directory, normalizer):
    """A Qwen2 style byte-level BPE (ChatML specials, no BOS)."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _train_bpe(
        pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]),
        normalizer, specials, 600, pre_tokenizers.ByteLevel.alphabet())
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    json.dump({"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
               "tokenizer_class": "Qwen2TokenizerFast"},
              open(os.path.join(directory, "tokenizer_config.json"), "w"))
    return directory


def build_llama2_nfkd(directory):
    directory = build_sentencepiece_bpe(directory, legacy=True)
    path = os.path.join(directory, "tokenizer.json")
    spec = json.load(open(path))
    spec["normalizer"]["normalizers"].insert(0, {"type": "NFKD"})
    json.dump(spec, open(path, "w"), ensure_ascii=False)
    return directory


BUILDERS = {
    "llama3": lambda d: build_llama3(d),
    "llama2": lambda d: build_sentencepiece_bpe(d, legacy=True),
    "mistral": lambda d: build_sentencepiece_bpe(d, legacy=False),
    "gpt2": build_gpt2,
    "qwen2": lambda d: build_qwen2(d, normalizers.NFC()),
    "qwen2_nfkc_lower": lambda d: build_qwen2(
        d, normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])),
    "llama2_nfkd": build_llama2_nfkd,
}


@pytest.fixture(params=sorted(BUILDERS))
def family(request, tmp_path):
    directory = BUILDERS[request.param](str(tmp_path / request.param))
    return request.param, directory, Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))


def _texts(extra=()):
    return [raw.decode("utf-8", errors="replace") for raw in list(CORPUS) + list(extra)]


def test_encode_matches_hugging_face(family, tmp_path):
    name, directory, hf = family
    got = run_tool("tokenize", directory, {"texts_hex": [raw.hex() for raw in CORPUS]}, tmp_path)
    for text, with_special, plain in zip(_texts(), got["with_special"], got["plain"]):
        assert with_special == hf.encode(text, add_special_tokens=True).ids, (name, text)
        assert plain == hf.encode(text, add_special_tokens=False).ids, (name, text)


def test_decode_matches_hugging_face(family, tmp_path):
    name, directory, hf = family
    got = run_tool("tokenize", directory, {"texts_hex": [raw.hex() for raw in CORPUS]}, tmp_path)
    for text, ids, decoded, skipped in zip(_texts(), got["with_special"], got["decoded"],
                                           got["decoded_skip"]):
        assert decoded == hf.decode(ids, skip_special_tokens=False), (name, text)
        assert skipped == hf.decode(ids, skip_special_tokens=True), (name, text)


def test_token_starts_match_hugging_face_offsets(family, tmp_path):
    """Each token's start byte lies inside the character Hugging Face reports as
    the token's start (byte-level and byte-fallback tokens can begin in the
    middle of a multi-byte character; HF reports that whole character)."""
    name, directory, hf = family
    valid = [raw for raw in CORPUS if raw.decode("utf-8", errors="replace").encode() == raw]
    got = run_tool("tokenize", directory, {"texts_hex": [raw.hex() for raw in valid]}, tmp_path)
    for raw, starts in zip(valid, got["starts"]):
        text = raw.decode()
        enc = hf.encode(text, add_special_tokens=False)
        byte_at = [len(text[:i].encode()) for i in range(len(text) + 1)]
        assert len(starts) == len(enc.offsets), (name, text)
        for k, (begin, _) in enumerate(enc.offsets):
            low = byte_at[begin]
            high = byte_at[begin + 1] if begin < len(text) else low + 1
            assert low <= starts[k] < high, (name, text, k, enc.tokens[k])


def test_random_text_matches_hugging_face(family, tmp_path):
    import random
    rng = random.Random(1234)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABC  \n\t.,'!?0123456789éüß日本語😀<>|_-") + \
        ["<s>", "</s>", "<|eot_id|>", "'ll", "'S", "\r\n", "\u00a0", "\u0085",
         "e\u0301", "\u0323", "\ufb01", "\u0130", "\uff21", "\u1100\u1161", "\u11a8"]
    samples = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(300)]
    name, directory, hf = family
    got = run_tool("tokenize", directory, {"texts_hex": [s.encode().hex() for s in samples]}, tmp_path)
    for text, ids, decoded in zip(samples, got["with_special"], got["decoded"]):
        assert ids == hf.encode(text).ids, (name, text)
        assert decoded == hf.decode(ids, skip_special_tokens=False), (name, text)
