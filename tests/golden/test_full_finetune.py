"""Golden tests: train.method full (every tensor trains) and llama_pro
(block expansion) against a plain
PyTorch AdamW fine-tune of the transformers model (CPU, fp32, tiny random
models shared with test_engine.py).

- The first step's loss and the gradient of every tensor (embedding, norms,
  linear weights and biases, LM head; a tied head counts once) equal
  transformers' autograd.
- 20 AdamW steps (weight decay on, gradients clipped by global norm, two
  micro-batches per step) follow torch.optim.AdamW: losses and final weights.
- The output folder (bf16 safetensors, sharded with an index) loads in
  transformers and gives the engine's logits.
- llama_pro: the expanded model's logits equal the original's exactly (nf4
  and bf16 bases); against the same expansion built in transformers (deep
  copies with o_proj and down_proj zeroed, only they trainable): logits,
  loss, the copies' gradients and a 5-step trajectory; the output folder
  has the new layer count, the original layers bit-exact (bf16) and loads
  in transformers.

Tolerances (fp32 on both sides: only the order of float reductions
differs): logits, loss and gradients within 1e-4 relative (norm-wise), and
so are the 20 steps' losses and the final weights. The loaded bf16
folder: its tensors equal the engine's final weights rounded to bf16, and
its logits are within 2e-2 of the engine's fp32 logits (bf16 rounding).
"""
import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from test_engine import TOOL, accumulate, make_batches, rel, save_random_model

STEPS, LR = 20, 1e-3
OPTIM = {"lr": LR, "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
         "max_grad_norm": 1.0}


def run_full(tmp_path, model_dir, batches, checkpointing=True, steps=STEPS, save_model=None,
             max_shard_bytes=None):
    spec = {"model_dir": str(model_dir), "batches": str(tmp_path / "batches.safetensors"),
            "out": str(tmp_path / "out.safetensors"),
            "lora": {"r": 8, "alpha": 16, "target_modules": []}, "optim": OPTIM,
            "activation_checkpointing": checkpointing, "steps": steps, "grad_accum": 2,
            "base": "bf16", "method": "full"}
    if save_model:
        spec["save_model"] = str(save_model)
    if max_shard_bytes:
        spec["max_shard_bytes"] = max_shard_bytes
    save_file(batches, tmp_path / "batches.safetensors")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run([TOOL, str(tmp_path / "spec.json")], check=True)
    return load_file(tmp_path / "out.safetensors")


def check_against_adamw(got, ref, params, batches, steps):
    """The engine's first-step loss and gradients, its per-step losses and its
    final weights against `steps` of torch AdamW (clipping at 1.0) over
    `params` of the transformers model `ref`; returns the reference losses."""
    loss0 = accumulate(ref, batches, 0)
    assert abs(got["loss"].item() - loss0) / abs(loss0) < 1e-4
    for n, p in params.items():
        assert rel(got["grad." + n], p.grad) < 1e-4, (n, rel(got["grad." + n], p.grad))
    ref.zero_grad(set_to_none=True)
    opt = torch.optim.AdamW(list(params.values()), lr=LR, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.01, foreach=False)
    losses = []
    for s in range(steps):
        losses.append(accumulate(ref, batches, s))
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    for s, (a, b) in enumerate(zip(got["losses"].tolist(), losses)):
        assert abs(a - b) / abs(b) < 1e-4, (s, a, b)
    for n, p in params.items():
        assert rel(got["final." + n], p.detach()) < 1e-4, (n, rel(got["final." + n], p.detach()))
    return losses


@pytest.mark.parametrize("name,checkpointing", [("llama_gqa_llama3rope", True),
                                                ("llama_gqa_llama3rope", False),
                                                ("llama_tied_linear", True),
                                                ("qwen2_bias", True)])
def test_full_finetune_matches_torch_adamw(tmp_path, name, checkpointing):
    config, model_dir = save_random_model(tmp_path, name)
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    got = run_full(tmp_path, model_dir, batches, checkpointing=checkpointing)

    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref.eval()
    with torch.no_grad():
        logits = ref(input_ids=batches["input_ids_0"]).logits
    assert rel(got["logits"], logits) < 1e-4, rel(got["logits"], logits)

    ref.train()
    params = dict(ref.named_parameters())  # a tied head appears once
    engine_grads = {k[len("grad."):] for k in got if k.startswith("grad.")}
    assert engine_grads == set(params), engine_grads ^ set(params)
    losses = check_against_adamw(got, ref, params, batches, STEPS)
    assert losses[-1] < losses[0]


def test_full_finetune_output_loads_in_transformers(tmp_path):
    config, model_dir = save_random_model(tmp_path, "llama_gqa_llama3rope")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    out_dir = tmp_path / "trained"
    # Small shards, so the folder is split as transformers splits a large model.
    got = run_full(tmp_path, model_dir, batches, steps=3, save_model=out_dir,
                   max_shard_bytes=64 * 1024)
    index = json.loads((out_dir / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1, shards
    written = json.loads((out_dir / "config.json").read_text())
    assert written.get("dtype", written.get("torch_dtype")) == "bfloat16"

    loaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    for n, p in loaded.named_parameters():
        assert torch.equal(p.detach(), got["final." + n].to(torch.bfloat16).float()), n
    loaded.eval()
    with torch.no_grad():
        logits = loaded(input_ids=batches["input_ids_0"]).logits
    assert rel(logits, got["final_logits"]) < 2e-2, rel(logits, got["final_logits"])


# --- train.method llama_pro: block expansion, only the inserted copies train


def expand_reference(model_dir, every):
    """The transformers model with a copy of every `every`-th decoder layer
    inserted after it, o_proj and down_proj of each copy zeroed; only the
    copies require grad."""
    import copy

    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for p in ref.parameters():
        p.requires_grad_(False)
    layers = []
    for i, layer in enumerate(ref.model.layers):
        layers.append(layer)
        if (i + 1) % every == 0:
            twin = copy.deepcopy(layer)
            with torch.no_grad():
                twin.self_attn.o_proj.weight.zero_()
                twin.mlp.down_proj.weight.zero_()
            for p in twin.parameters():
                p.requires_grad_(True)
            layers.append(twin)
    for j, layer in enumerate(layers):
        layer.self_attn.layer_idx = j
    ref.model.layers = torch.nn.ModuleList(layers)
    ref.config.num_hidden_layers = len(layers)
    return ref


def run_llama_pro(tmp_path, model_dir, batches, base, every, steps, save_model=None):
    spec = {"model_dir": str(model_dir), "batches": str(tmp_path / "batches.safetensors"),
            "out": str(tmp_path / "out.safetensors"),
            "lora": {"r": 8, "alpha": 16, "target_modules": []}, "optim": OPTIM,
            "activation_checkpointing": True, "steps": steps, "grad_accum": 2, "base": base,
            "method": "llama_pro", "expand_every": every}
    if save_model:
        spec["save_model"] = str(save_model)
    save_file(batches, tmp_path / "batches.safetensors")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run([TOOL, str(tmp_path / "spec.json")], check=True)
    return load_file(tmp_path / "out.safetensors")


@pytest.mark.parametrize("base", ["nf4", "bf16"])
def test_llama_pro_expanded_model_starts_as_the_original(tmp_path, base):
    config, model_dir = save_random_model(tmp_path, "llama_gqa_llama3rope")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    got = run_llama_pro(tmp_path, model_dir, batches, base, every=1, steps=0)
    # Exactly: each copy adds 0.0 to the residual stream.
    assert torch.equal(got["logits"], got["original_logits"])
    # Only the two copies' tensors train.
    trained = {k[len("final."):] for k in got if k.startswith("final.")}
    assert {k.split(".")[2] for k in trained} == {"1", "3"}, trained


def test_llama_pro_trains_only_the_copies_and_loads_in_transformers(tmp_path):
    config, model_dir = save_random_model(tmp_path, "llama_gqa_llama3rope")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    steps = 5
    out_dir = tmp_path / "expanded"
    got = run_llama_pro(tmp_path, model_dir, batches, "bf16", every=2, steps=steps,
                        save_model=out_dir)

    ref = expand_reference(model_dir, every=2)  # layers 0, 1, copy of 1
    ref.eval()
    with torch.no_grad():
        logits = ref(input_ids=batches["input_ids_0"]).logits
    assert rel(got["logits"], logits) < 1e-4, rel(got["logits"], logits)
    ref.train()
    params = {n: p for n, p in ref.named_parameters() if p.requires_grad}
    assert {"grad." + n for n in params} == {k for k in got if k.startswith("grad.")}
    check_against_adamw(got, ref, params, batches, steps)

    # The folder: three layers; the original ones exactly the base's (bf16),
    # the copy the trained weights (bf16), now away from its zero start.
    written = json.loads((out_dir / "config.json").read_text())
    assert written["num_hidden_layers"] == 3
    loaded = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    base = load_file(model_dir / "model.safetensors")
    source = {0: 0, 1: 1}
    for n, p in loaded.named_parameters():
        if n.startswith("model.layers.2."):
            assert torch.equal(p.detach(), got["final." + n].to(torch.bfloat16).float()), n
        elif n.startswith("model.layers."):
            j = int(n.split(".")[2])
            original = n.replace(f"model.layers.{j}.", f"model.layers.{source[j]}.", 1)
            assert torch.equal(p.detach(), base[original].to(torch.bfloat16).float()), n
        else:
            assert torch.equal(p.detach(), base[n].to(torch.bfloat16).float()), n
    assert loaded.model.layers[2].self_attn.o_proj.weight.abs().sum() > 0
    loaded.eval()
    with torch.no_grad():
        final = loaded(input_ids=batches["input_ids_0"]).logits
    assert rel(final, got["final_logits"]) < 2e-2, rel(final, got["final_logits"])
