"""Golden test: the validation loss a job reports against transformers + PEFT.

A tiny random Llama model (saved with transformers, a character-level
tokenizer) trains a few steps with rigtune-worker on a text dataset, with a
separate validation file. The worker evaluates at the end of training and
records the loss in the last checkpoint's trainer_state.json. The reference
loads the same base (every decoder linear replaced by its NF4 round-trip
through bitsandbytes), loads the adapter the job wrote with PEFT, and takes
the mean token cross-entropy over the same examples, each on its own (no
packing), in eval mode (no dropout).

Tolerance: 1e-4 relative (fp32). The target-token count must match exactly.
"""
import json
import os
import re
import subprocess

import pytest
import torch
from peft import PeftModel
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig

from test_engine import load_nf4_base, nf4_roundtrip

WORKER = os.environ.get("RIGTUNE_WORKER_BINARY", "rigtune-worker")
BOS, EOS = 200, 201


def char_tokenizer_json():
    """One token per printable ASCII character (id = byte value), no merges."""
    vocab = {chr(c): c for c in range(32, 127)}
    vocab["\n"], vocab["<unk>"] = 10, 0
    added = []
    for tid, content in [(BOS, "<s>"), (EOS, "</s>")]:
        vocab[content] = tid
        added.append({"id": tid, "content": content, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    return {"version": "1.0", "added_tokens": added, "normalizer": None, "pre_tokenizer": None,
            "post_processor": None, "decoder": None,
            "model": {"type": "BPE", "vocab": vocab, "merges": [], "unk_token": "<unk>",
                      "fuse_unk": False, "byte_fallback": False}}


def texts(n, seed):
    gen = torch.Generator().manual_seed(seed)
    words = ["alpha", "beta", "gamma", "delta", "rig", "tune", "loss", "step"]
    out = []
    for _ in range(n):
        k = int(torch.randint(2, 9, (1,), generator=gen))
        out.append(" ".join(words[int(i)] for i in torch.randint(0, len(words), (k,),
                                                                  generator=gen)))
    return out


def write_jsonl(path, lines):
    with open(path, "w") as f:
        for t in lines:
            f.write(json.dumps({"text": t}) + "\n")


def save_model(model_dir):
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=208,
                         max_position_embeddings=256, rms_norm_eps=1e-5,
                         tie_word_embeddings=False, bos_token_id=BOS, eos_token_id=EOS)
    hf = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    hf.save_pretrained(model_dir, safe_serialization=True)
    with open(os.path.join(model_dir, "tokenizer.json"), "w") as f:
        json.dump(char_tokenizer_json(), f)
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}, f)


def reference_loss(model_dir, adapter_dir, lines):
    """Mean token loss over `lines`: text format = BOS + text + EOS, every
    token after the first is a target."""
    model = PeftModel.from_pretrained(load_nf4_base(model_dir), adapter_dir).eval()
    return model_loss_and_tokens(model, model_dir, lines)


def model_loss_and_tokens(model, model_dir, lines):
    """The mean token loss of `model` over `lines` (as reference_loss says)
    and the number of target tokens."""
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    loss_sum, tokens = 0.0, 0
    with torch.no_grad():
        for text in lines:
            ids = torch.tensor([[BOS] + tok.encode(text, add_special_tokens=False).ids + [EOS]])
            logits = model(input_ids=ids).logits[0, :-1].double()
            loss_sum += torch.nn.functional.cross_entropy(logits, ids[0, 1:],
                                                          reduction="sum").item()
            tokens += ids.shape[1] - 1
    return loss_sum / tokens, tokens


def test_validation_loss_matches_transformers(tmp_path):
    model_dir = tmp_path / "model"
    save_model(model_dir)
    write_jsonl(tmp_path / "train.jsonl", texts(24, 1))
    validation = texts(9, 2)
    write_jsonl(tmp_path / "valid.jsonl", validation)
    out = tmp_path / "out"
    job = {"model": str(model_dir), "output_dir": str(out),
           "dataset": {"path": str(tmp_path / "train.jsonl"), "format": "text",
                       "validation_path": str(tmp_path / "valid.jsonl")},
           # dropout is on while training; evaluation must not apply it
           "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
           "optim": {"lr": 0.02, "schedule": "constant"},
           "train": {"context_length": 64, "batch_size": 2, "max_steps": 3, "dtype": "fp32",
                     "device": "cpu", "seed": 5}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    done = subprocess.run([WORKER, "--job", str(tmp_path / "job.json")], capture_output=True,
                          text=True, env=dict(os.environ, WORLD_SIZE="1", RANK="0"))
    assert done.returncode == 0, done.stdout + done.stderr
    reported = re.findall(r"validation step (\d+)  loss ([0-9.]+)  perplexity ([0-9.]+)  "
                          r"(\d+) tokens", done.stdout)
    assert [r[0] for r in reported] == ["3"], done.stdout
    state = json.loads((out / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    expected, tokens = reference_loss(model_dir, out / "adapter", validation)
    assert int(reported[0][3]) == tokens
    assert abs(state["validation_loss"] - expected) <= 1e-4 * expected, (state, expected)
    # The progress line shows the same number (rounded).
    assert abs(float(reported[0][1]) - state["validation_loss"]) < 1e-4


def model_loss(model, model_dir, lines):
    """reference_loss for a plain transformers model."""
    return model_loss_and_tokens(model, model_dir, lines)[0]


@pytest.mark.parametrize("method,base,expand_every,layers", [("full", "bf16", None, 2),
                                                             ("llama_pro", "nf4", 1, 4)])
def test_whole_model_job_writes_a_folder_transformers_loads(tmp_path, method, base,
                                                            expand_every, layers):
    """A job file with train.method full or llama_pro, run by rigtune-worker,
    writes <output_dir>/model: a Hugging Face folder (with the expanded
    layer count for llama_pro and the tokenizer) whose loss on the
    validation set is the job's own, up to the bf16 rounding of the folder."""
    model_dir = tmp_path / "model"
    save_model(model_dir)
    write_jsonl(tmp_path / "train.jsonl", texts(24, 1))
    validation = texts(9, 2)
    write_jsonl(tmp_path / "valid.jsonl", validation)
    out = tmp_path / "out"
    train = {"context_length": 64, "batch_size": 2, "max_steps": 3, "dtype": "fp32",
             "device": "cpu", "seed": 5, "method": method, "base": base}
    if expand_every:
        train["expand_every"] = expand_every
    job = {"model": str(model_dir), "output_dir": str(out),
           "dataset": {"path": str(tmp_path / "train.jsonl"), "format": "text",
                       "validation_path": str(tmp_path / "valid.jsonl")},
           "optim": {"lr": 0.002, "schedule": "constant"}, "train": train}
    (tmp_path / "job.json").write_text(json.dumps(job))
    done = subprocess.run([WORKER, "--job", str(tmp_path / "job.json")], capture_output=True,
                          text=True, env=dict(os.environ, WORLD_SIZE="1", RANK="0"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "model written to" in done.stdout, done.stdout
    folder = out / "model"
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == layers
    assert (folder / "tokenizer.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert len(loaded.model.layers) == layers
    if base == "nf4":
        # The job computed with its original layers (0 and 2 of 4) in NF4;
        # the folder holds them as stored, the trained copies dense.
        with torch.no_grad():
            for j in (0, 2):
                layer = loaded.model.layers[j]
                for mod in list(layer.self_attn.children()) + list(layer.mlp.children()):
                    if isinstance(mod, torch.nn.Linear):
                        mod.weight.copy_(nf4_roundtrip(mod.weight))
    state = json.loads((out / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    got = model_loss(loaded, model_dir, validation)
    assert abs(got - state["validation_loss"]) <= 1e-2 * state["validation_loss"], \
        (got, state["validation_loss"])
