"""Golden test: rigtune's Unicode normalizers against Hugging Face `tokenizers`.

NFD, NFKD, NFC, NFKC and Lowercase (alone and in Sequences) must produce the
same text as Hugging Face for every Unicode scalar value, and every output
character must be aligned to the same original character (its start byte) as
Hugging Face's NormalizedString alignments say, on composed, decomposed,
compatibility, Hangul and reordered-combining-mark input.
"""
import json
import os
import random
import subprocess

import pytest
from tokenizers import PreTokenizedString, normalizers

TOOL = os.environ.get("RIGTUNE_DATA_GOLDEN_TOOL", "data_golden_tool")

CONFIGS = {
    "NFD": {"type": "NFD"},
    "NFKD": {"type": "NFKD"},
    "NFC": {"type": "NFC"},
    "NFKC": {"type": "NFKC"},
    "Lowercase": {"type": "Lowercase"},
    "NFKC+Lowercase": {"type": "Sequence",
                       "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
    "Lowercase+NFD+NFC": {"type": "Sequence", "normalizers": [
        {"type": "Lowercase"}, {"type": "NFD"}, {"type": "NFC"}]},
    "NFKD+Prepend+Replace": {"type": "Sequence", "normalizers": [
        {"type": "NFKD"}, {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
}

# Characters whose normalization moves, merges or splits characters.
TRICKY = list("aeiouAEIOU kKsSnN\u0130\u0131\u03a3\u03c3\u00df\u1e9e\u01c5\u212a\u212b\u2126"
              "\u00e9\u00c5\u1e9b\u1e63\u1e69\u0344\u0f73\u0f75\u0f81\u1100\u1161\u11a8"
              "\u1112\u116e\u11ab\uac00\ud55c\uae00\ufb01\ufb03\uff21\uff41\uff11\u2460"
              "\u00bd\u00b2\u3392\u2103\u216b\u3300\u01c4\u0132\u00a0\u2002\u0345") + \
    ["\u0300", "\u0301", "\u0303", "\u0307", "\u0308", "\u030a", "\u0316", "\u0323",
     "\u0327", "\u0328", "\u031b", "\u0345", "\u05b0", "\u0e38", "\u302a", "\u1df6",
     "\U0001d15e", "\U0001f600", "\u0958", "\u093c", "\u0915"]


def run_normalize(config, texts, tmp_path):
    cfg, src, dst = tmp_path / "n.json", tmp_path / "in.json", tmp_path / "out.json"
    cfg.write_text(json.dumps(config))
    src.write_text(json.dumps({"texts_hex": [t.encode().hex() for t in texts]}))
    subprocess.run([TOOL, "normalize", str(cfg), str(src), str(dst)], check=True)
    return json.loads(dst.read_text())


def build_hf(config):
    kind = config["type"]
    if kind == "Sequence":
        return normalizers.Sequence([build_hf(c) for c in config["normalizers"]])
    if kind == "Prepend":
        return normalizers.Prepend(config["prepend"])
    if kind == "Replace":
        return normalizers.Replace(config["pattern"]["String"], config["content"])
    return getattr(normalizers, kind)()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_code_point_matches_hugging_face(name, tmp_path):
    code_points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and c != 0x0A]
    chunks = [code_points[i:i + 8192] for i in range(0, len(code_points), 8192)]
    texts = ["\n".join(chr(c) for c in chunk) for chunk in chunks]
    got = run_normalize(CONFIGS[name], texts, tmp_path)["normalized"]
    hf = build_hf(CONFIGS[name])
    for chunk, text, mine in zip(chunks, texts, got):
        theirs = hf.normalize_str(text)
        if mine != theirs:
            diff = [(hex(c), a, b) for c, a, b in zip(chunk, mine.split("\n"), theirs.split("\n"))
                    if a != b]
            pytest.fail(f"{name}: {diff[:20]}")


def hf_char_starts(hf, text):
    """(normalized text, original start byte of each normalized character)."""
    pre = PreTokenizedString(text)
    pre.normalize(lambda ns: hf.normalize(ns))
    pre.split(lambda i, ns: [ns[j:j + 1] for j in range(len(ns.normalized))])
    splits = pre.get_splits(offset_referential="original", offset_type="byte")
    return "".join(s for s, _, _ in splits), [start for _, (start, _), _ in splits]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_alignments_match_hugging_face(name, tmp_path):
    rng = random.Random(7)
    texts = ["".join(rng.choice(TRICKY) for _ in range(rng.randint(1, 12))) for _ in range(400)]
    texts += ["e\u0301", "\u0301e", "\uac00\u11a8", "\u1100\u1161\u11a8", "a\u0323\u0301\u0316",
              "\u0130stanbul", "\ufb01\ufb03", "\u1e9b\u0323", "\u0f73\u0f71\u0f72"]
    got = run_normalize(CONFIGS[name], texts, tmp_path)
    hf = build_hf(CONFIGS[name])
    for text, mine, sources in zip(texts, got["normalized"], got["sources"]):
        theirs, starts = hf_char_starts(hf, text)
        assert mine == theirs, (name, text)
        byte = 0
        mine_starts = []
        for ch in mine:
            mine_starts.append(sources[byte])
            byte += len(ch.encode())
        assert mine_starts == starts, (name, text)
