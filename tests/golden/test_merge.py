"""Golden test: `rigtune-worker merge` and PEFT loading rigtune's adapter.

A tiny random Llama is saved with transformers and a PEFT adapter with random
non-zero A and B with PEFT. The merged folder must load with
`from_pretrained`, hold PEFT's own merge_and_unload() weights on the bf16 base
(1e-2 relative, norm-wise), give its logits (two bf16 forwards: 3e-2) and
those of base + adapter unmerged in
fp32 (bf16 rounding of the weights: 2e-2). Bases stored as bnb-4bit and
outputs re-quantized to NF4 are compared with bitsandbytes' dequantization.
Finally PEFT loads an adapter written by rigtune's SaveAdapter onto the
NF4-round-tripped HF model and reproduces the engine's logits (fp32, 1e-4).
"""
import json
import os
import subprocess

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, LlamaConfig

TOOL = os.environ.get("RIGTUNE_ENGINE_GOLDEN_TOOL", "engine_golden_tool")
WORKER = os.environ.get("RIGTUNE_WORKER_BINARY", "rigtune-worker")
CLI = os.environ.get("RIGTUNE_CLI")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# every linear input dimension is a multiple of 64 (see test_engine.py)
SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=160, max_position_embeddings=256,
             rms_norm_eps=1e-5, tie_word_embeddings=False)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def save_model(tmp_path, dtype):
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(LlamaConfig(**SMALL), dtype=torch.float32)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.08)
    hf = hf.to(dtype)
    model_dir = tmp_path / "base"
    hf.save_pretrained(model_dir, safe_serialization=True)
    return model_dir


def save_adapter(tmp_path, model_dir, use_rslora=False, targets=TARGETS):
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets,
                     use_rslora=use_rslora, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    return adapter_dir


def merge(base, adapter, out, *extra):
    cmd = [WORKER, "merge", "--base", str(base), "--adapter", str(adapter), "--out", str(out)]
    done = subprocess.run(cmd + list(extra), check=True, capture_output=True, text=True)
    return done.stdout


def logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


IDS = torch.randint(0, 160, (2, 24), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("base_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("use_rslora", [False, True])
def test_merged_model_matches_peft(tmp_path, base_dtype, use_rslora):
    model_dir = save_model(tmp_path, base_dtype)
    adapter_dir = save_adapter(tmp_path, model_dir, use_rslora)
    out = tmp_path / "merged"
    stdout = merge(model_dir, adapter_dir, out, "--max-shard-gb", "0.0001")
    assert stdout.count("merged") >= 2 * len(TARGETS)
    assert not (tmp_path / "merged.tmp").exists()

    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and all(s.endswith(f"-of-{len(shards):05d}.safetensors") for s in shards)
    config = json.loads((out / "config.json").read_text())
    assert config.get("torch_dtype", config.get("dtype")) == "bfloat16"
    assert (out / "generation_config.json").exists()

    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in merged.parameters())
    base_bf16 = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    ref = PeftModel.from_pretrained(base_bf16, adapter_dir).merge_and_unload()
    ref_weights = dict(ref.named_parameters())
    for name, p in merged.named_parameters():
        assert rel(p, ref_weights[name]) < 1e-2, name
    assert rel(logits(merged, IDS), logits(ref, IDS)) < 3e-2  # two bf16 forwards

    # base + adapter, unmerged, fp32
    unmerged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter_dir)
    merged32 = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert rel(logits(merged32, IDS), logits(unmerged, IDS)) < 2e-2


def bnb_quantize(w):
    import bitsandbytes.functional as bnbf

    q, state = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    return q, state


def bnb_dequantize(sd, prefix):
    import bitsandbytes.functional as bnbf

    parts = {k[len(prefix) + len(".weight."):]: v for k, v in sd.items()
             if k.startswith(prefix + ".weight.")}
    state = bnbf.QuantState.from_dict(parts, device=torch.device("cpu"))
    return bnbf.dequantize_4bit(sd[prefix + ".weight"], state)


def is_linear(name):
    return name.startswith("model.layers.") and name.endswith("_proj.weight")


def test_bnb4bit_base(tmp_path):
    model_dir = save_model(tmp_path, torch.bfloat16)
    adapter_dir = save_adapter(tmp_path, model_dir)
    sd = load_file(model_dir / "model.safetensors")
    quantized, dequantized = {}, {}
    for name, w in sd.items():
        if not is_linear(name):
            quantized[name] = w
            continue
        q, state = bnb_quantize(w)
        quantized[name] = q
        for k, v in state.as_dict(packed=True).items():
            quantized[name[: -len(".weight")] + ".weight." + k] = v
        dequantized[name] = bnb_dequantize(quantized, name[: -len(".weight")]).reshape(w.shape)
    bnb_dir = tmp_path / "bnb"
    bnb_dir.mkdir()
    save_file(quantized, bnb_dir / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((model_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True,
                                     "bnb_4bit_quant_type": "nf4",
                                     "bnb_4bit_use_double_quant": True}
    (bnb_dir / "config.json").write_text(json.dumps(config))

    out = tmp_path / "merged"
    merge(bnb_dir, adapter_dir, out)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)

    # the reference: PEFT's merge onto the bf16 dequantized base
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name in dequantized:
                p.copy_(dequantized[name])
    ref = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    ref_weights = dict(ref.named_parameters())
    for name, p in merged.named_parameters():
        assert rel(p, ref_weights[name]) < 1e-2, name
    assert rel(logits(merged, IDS), logits(ref, IDS)) < 3e-2  # two bf16 forwards


def test_quantize_nf4_output(tmp_path):
    model_dir = save_model(tmp_path, torch.bfloat16)
    adapter_dir = save_adapter(tmp_path, model_dir)
    merge(model_dir, adapter_dir, tmp_path / "bf16")
    merge(model_dir, adapter_dir, tmp_path / "nf4", "--quantize-nf4")
    config = json.loads((tmp_path / "nf4" / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["load_in_4bit"] and qc["bnb_4bit_quant_type"] == "nf4"
    assert qc["bnb_4bit_use_double_quant"] and qc["bnb_4bit_compute_dtype"] == "bfloat16"

    def load_dir(d):
        index = json.loads((d / "model.safetensors.index.json").read_text())
        sd = {}
        for shard in set(index["weight_map"].values()):
            sd.update(load_file(d / shard))
        assert set(sd) == set(index["weight_map"])
        return sd

    bf16, nf4 = load_dir(tmp_path / "bf16"), load_dir(tmp_path / "nf4")
    linears = [n for n in bf16 if is_linear(n)]
    assert len(linears) == 2 * len(TARGETS)
    for name in bf16:
        if name in linears:
            # bit-identical to bitsandbytes quantizing the bf16 merged weight
            q, state = bnb_quantize(bf16[name])
            assert torch.equal(nf4[name].flatten(), q.flatten()), name
            got = bnb_dequantize(nf4, name[: -len(".weight")])
            assert torch.equal(got, bnbf_dequantize(q, state)), name
        else:
            assert torch.equal(nf4[name], bf16[name]), name


def bnbf_dequantize(q, state):
    import bitsandbytes.functional as bnbf

    return bnbf.dequantize_4bit(q, state)


def test_cli_export_and_existing_output(tmp_path):
    if not CLI:
        pytest.skip("the rigtune CLI was not built")
    model_dir = save_model(tmp_path, torch.float32)
    adapter_dir = save_adapter(tmp_path, model_dir, targets=["q_proj", "v_proj"])
    out = tmp_path / "merged"
    done = subprocess.run([CLI, "export", "--base", str(model_dir), "--adapter", str(adapter_dir),
                           "--out", str(out), "--worker-binary", WORKER],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "q_proj.weight merged" in done.stdout
    assert "mlp.up_proj.weight copied" in done.stdout
    AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    # an existing output is refused, and left alone
    again = subprocess.run([WORKER, "merge", "--base", str(model_dir), "--adapter",
                            str(adapter_dir), "--out", str(out)], capture_output=True, text=True)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_merge_rejects_mismatched_adapter(tmp_path):
    model_dir = save_model(tmp_path, torch.float32)
    adapter_dir = save_adapter(tmp_path, model_dir)
    sd = load_file(adapter_dir / "adapter_model.safetensors")
    key = next(k for k in sd if k.endswith("q_proj.lora_A.weight"))
    sd[key] = torch.zeros(8, 32)
    save_file(sd, adapter_dir / "adapter_model.safetensors")
    done = subprocess.run([WORKER, "merge", "--base", str(model_dir), "--adapter",
                           str(adapter_dir), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "q_proj" in done.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def nf4_roundtrip(w):
    q, state = bnb_quantize(w)
    return bnbf_dequantize(q, state).reshape(w.shape).to(w.dtype)


def test_peft_loads_rigtune_adapter(tmp_path):
    model_dir = save_model(tmp_path, torch.float32)
    adapter0 = save_adapter(tmp_path, model_dir)
    save_file({"input_ids_0": IDS, "labels_0": IDS.clone()}, tmp_path / "batches.safetensors")
    spec = {"model_dir": str(model_dir), "adapter_dir": str(adapter0),
            "batches": str(tmp_path / "batches.safetensors"),
            "out": str(tmp_path / "out.safetensors"),
            "lora": {"r": 8, "alpha": 16, "target_modules": TARGETS}, "optim": {}, "steps": 0,
            "save_adapter": str(tmp_path / "rigtune_adapter")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run([TOOL, str(tmp_path / "spec.json")], check=True)
    got = load_file(tmp_path / "out.safetensors")

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if is_linear(name):
                p.copy_(nf4_roundtrip(p))
    ref = PeftModel.from_pretrained(base, tmp_path / "rigtune_adapter")
    assert rel(got["logits"], logits(ref, IDS)) < 1e-4


@pytest.mark.parametrize("name", ["mistral_head_dim_window", "qwen3_tied", "gemma2", "gemma3",
                                  "phi3_longrope_window", "phi4mini_partial_tied"])
def test_merge_other_architectures(tmp_path, name):
    """Merging is by linear name and shape: the merged folder of every
    supported architecture (test_engine's tiny configs, fp32 base; Phi-3's
    fused qkv_proj / gate_up_proj written under their own names) loads with
    from_pretrained and computes what base + adapter do unmerged (bf16
    rounding of the merged weights: 2e-2)."""
    from test_engine import save_random_model, targets

    config, model_dir = save_random_model(tmp_path, name)
    adapter_dir = save_adapter(tmp_path, model_dir, targets=targets(config))
    out = tmp_path / "merged"
    stdout = merge(model_dir, adapter_dir, out)
    assert stdout.count("merged") >= 2 * len(targets(config))
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter_dir)
    assert rel(logits(merged, IDS), logits(unmerged, IDS)) < 2e-2


def test_dora_adapter_merges_as_peft(tmp_path):
    """A DoRA adapter (use_dora, lora_magnitude_vector) merges as PEFT's
    merge_and_unload does: each row of W + s·B·A rescaled to its magnitude."""
    model_dir = save_model(tmp_path, torch.float32)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                     use_dora=True, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    out = tmp_path / "merged"
    merge(model_dir, adapter_dir, out)

    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    ref = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        adapter_dir).merge_and_unload()
    ref_weights = dict(ref.named_parameters())
    for name, p in merged.named_parameters():
        assert rel(p, ref_weights[name]) < 1e-2, name  # the merged folder is bf16
    unmerged = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter_dir)
    assert rel(logits(merged, IDS), logits(unmerged, IDS)) < 2e-2
