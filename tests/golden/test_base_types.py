"""Golden tests: the base-weight formats and DoRA against transformers + PEFT
(CPU, fp32, tiny random models shared with test_engine.py).

- train.base bf16 (a dense base: on the CPU engine the fp32 weights as they
  are) + LoRA against PEFT LoRA on the unquantized transformers model.
- train.base hqq4: the codes, scales and zeros equal the `hqq` package's
  for its default 4-bit settings (group 64, axis 1, round_zero, its proximal
  solver), the dequantized weights equal hqq's bit for bit, and LoRA on that
  base trains as PEFT LoRA over hqq's dequantized weights.
- train.method dora on an nf4 and a bf16 base against PEFT `use_dora=True`
  (on the NF4 round-trip of the weights for nf4): logits, loss and the
  gradients of A, B and the magnitude vector, then a 20-step AdamW
  trajectory; the adapter rigtune writes loads in PEFT with the same logits.

Tolerances: logits, loss, gradients within 1e-4 relative (norm-wise, fp32);
losses within 1e-3 relative per step and final adapters within 1e-3.
"""
import json
import subprocess

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from test_engine import TARGETS, TOOL, accumulate, load_nf4_base, make_batches, rel, \
    save_random_model, targets

R, ALPHA, STEPS, LR = 8, 16, 20, 2e-3
OPTIM = {"lr": LR, "weight_decay": 0.01, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8,
         "max_grad_norm": 1.0}


def hqq_quantize(w):
    """hqq's Quantizer with BaseQuantizeConfig(nbits=4, group_size=64), on the
    CPU in float32: (unpacked codes [groups, 64], scale, zero, dequantized)."""
    from hqq.core.quantize import BaseQuantizeConfig, Quantizer

    params = BaseQuantizeConfig(nbits=4, group_size=64)["weight_quant_params"]
    w_q, meta = Quantizer.quantize(w, device="cpu", compute_dtype=torch.float32, **params)
    meta["compute_dtype"] = torch.float32
    codes = Quantizer.unpack[meta["packing"]](w_q)
    return codes, meta["scale"].reshape(-1), meta["zero"].reshape(-1), \
        Quantizer.dequantize(w_q, meta)


def load_hqq4_base(model_dir):
    """The fp32 model with every decoder linear replaced by hqq's dequantized
    4-bit weights."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with torch.no_grad():
        for layer in model.model.layers:
            for mod in list(layer.self_attn.children()) + list(layer.mlp.children()):
                if isinstance(mod, torch.nn.Linear):
                    mod.weight.copy_(hqq_quantize(mod.weight.detach().clone())[3])
    return model


def reference(model_dir, base, use_dora, seed=1):
    """PEFT over the weights rigtune computes with, with a random adapter (B
    non-zero, magnitudes off their initial row norms, so every gradient and
    the DoRA rescaling are informative)."""
    if base == "nf4":
        model = load_nf4_base(model_dir)
    elif base == "hqq4":
        model = load_hqq4_base(model_dir)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=targets(model.config),
                     bias="none", task_type="CAUSAL_LM", use_dora=use_dora)
    peft_model = get_peft_model(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_magnitude_vector" in name:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return peft_model


def engine_key(peft_name):
    """rigtune's PEFT key for a PEFT parameter name."""
    key = peft_name.replace(".default", "")
    return key[: -len(".weight")] if ".lora_magnitude_vector" in key else key


def run_engine(tmp_path, model_dir, adapter_dir, batches, base, use_dora, checkpointing=True,
               steps=STEPS, save_adapter=None):
    fused = json.loads((model_dir / "config.json").read_text()).get("model_type") == "phi3"
    spec = {"model_dir": str(model_dir), "adapter_dir": str(adapter_dir),
            "batches": str(tmp_path / "batches.safetensors"), "out": str(tmp_path / "out.safetensors"),
            "lora": {"r": R, "alpha": ALPHA, "use_dora": use_dora,
                     "target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
                     if fused else TARGETS},
            "optim": OPTIM, "activation_checkpointing": checkpointing, "steps": steps,
            "grad_accum": 2, "base": base}
    if save_adapter:
        spec["save_adapter"] = str(save_adapter)
    save_file(batches, tmp_path / "batches.safetensors")
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run([TOOL, str(tmp_path / "spec.json")], check=True)
    return load_file(tmp_path / "out.safetensors")


def compare(ref, got, batches):
    """Logits, first-step loss and gradients, then the AdamW trajectory."""
    ref.eval()
    with torch.no_grad():
        logits = ref(input_ids=batches["input_ids_0"]).logits
    assert rel(got["logits"], logits) < 1e-4, rel(got["logits"], logits)

    ref.train()
    trainable = [(n, p) for n, p in ref.named_parameters() if p.requires_grad]
    loss0 = accumulate(ref, batches, 0)
    assert abs(got["loss"].item() - loss0) / abs(loss0) < 1e-4
    for n, p in trainable:
        key = "grad." + engine_key(n)
        assert key in got, key
        assert rel(got[key], p.grad) < 1e-4, (key, rel(got[key], p.grad))
    ref.zero_grad(set_to_none=True)

    opt = torch.optim.AdamW([p for _, p in trainable], lr=LR, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.01, foreach=False)
    losses = []
    for s in range(STEPS):
        losses.append(accumulate(ref, batches, s))
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    for s, (a, b) in enumerate(zip(got["losses"].tolist(), losses)):
        assert abs(a - b) / abs(b) < 1e-3, (s, a, b)
    assert losses[-1] < losses[0]
    for n, p in trainable:
        key = "final." + engine_key(n)
        assert rel(got[key], p.detach()) < 1e-3, key


@pytest.mark.parametrize("name", ["llama_gqa_llama3rope", "qwen2_bias"])
def test_bf16_base_lora_matches_peft(tmp_path, name):
    """train.base bf16: the frozen linears are the checkpoint's own weights
    (no quantization), and LoRA on them trains as PEFT LoRA does."""
    config, model_dir = save_random_model(tmp_path, name)
    ref = reference(model_dir, "bf16", use_dora=False)
    ref.save_pretrained(tmp_path / "adapter0")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    got = run_engine(tmp_path, model_dir, tmp_path / "adapter0", batches, "bf16", False)
    weights = load_file(model_dir / "model.safetensors")
    for key, w in got.items():
        if key.startswith("base."):
            assert torch.equal(w, weights[key[len("base."):]]), key
    compare(ref, got, batches)


def test_hqq4_quantizes_as_hqq(tmp_path):
    """rigtune's W_q, scale and zero are hqq's, and so is the dequantized weight."""
    config, model_dir = save_random_model(tmp_path, "qwen2_bias")
    ref = reference(model_dir, "bf16", use_dora=False)
    ref.save_pretrained(tmp_path / "adapter0")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    got = run_engine(tmp_path, model_dir, tmp_path / "adapter0", batches, "hqq4", False, steps=0)
    weights = load_file(model_dir / "model.safetensors")
    checked = 0
    for key in got:
        if not key.startswith("base."):
            continue
        name = key[len("base."):]
        codes, scale, zero, dequantized = hqq_quantize(weights[name])
        assert torch.equal(got[f"hqq.{name}.codes"], codes), name
        assert torch.equal(got[f"hqq.{name}.scale"], scale), name
        assert torch.equal(got[f"hqq.{name}.zero"], zero), name
        assert torch.equal(got[key], dequantized), name
        checked += 1
    assert checked == 7 * config.num_hidden_layers


def test_hqq4_base_lora_matches_peft(tmp_path):
    """LoRA on an hqq4 base: the same steps as PEFT LoRA over hqq's
    dequantized weights."""
    config, model_dir = save_random_model(tmp_path, "llama_gqa_llama3rope")
    ref = reference(model_dir, "hqq4", use_dora=False)
    ref.save_pretrained(tmp_path / "adapter0")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    got = run_engine(tmp_path, model_dir, tmp_path / "adapter0", batches, "hqq4", False)
    compare(ref, got, batches)


@pytest.mark.parametrize("base", ["nf4", "bf16"])
@pytest.mark.parametrize("checkpointing", [True, False])
def test_dora_matches_peft(tmp_path, base, checkpointing):
    config, model_dir = save_random_model(tmp_path, "llama_gqa_llama3rope")
    ref = reference(model_dir, base, use_dora=True)
    ref.save_pretrained(tmp_path / "adapter0")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    got = run_engine(tmp_path, model_dir, tmp_path / "adapter0", batches, base, True,
                     checkpointing=checkpointing)
    assert any("lora_magnitude_vector" in k for k in got if k.startswith("grad."))
    compare(ref, got, batches)


@pytest.mark.parametrize("base", ["nf4", "bf16"])
def test_dora_on_fused_phi3_linears_matches_peft(tmp_path, base):
    """DoRA on Phi-3's fused qkv_proj / gate_up_proj: one magnitude per row of
    the fused weight, as PEFT's use_dora on those modules."""
    config, model_dir = save_random_model(tmp_path, "phi4mini_partial_tied")
    ref = reference(model_dir, base, use_dora=True)
    ref.save_pretrained(tmp_path / "adapter0")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    got = run_engine(tmp_path, model_dir, tmp_path / "adapter0", batches, base, True)
    assert any("qkv_proj.lora_magnitude_vector" in k for k in got if k.startswith("grad."))
    compare(ref, got, batches)


@pytest.mark.parametrize("base", ["nf4", "bf16"])
def test_dora_adapter_loads_in_peft(tmp_path, base):
    """The DoRA adapter rigtune writes (use_dora, lora_magnitude_vector) loads
    in PEFT and gives rigtune's logits."""
    config, model_dir = save_random_model(tmp_path, "qwen2_bias")
    ref = reference(model_dir, base, use_dora=True)
    ref.save_pretrained(tmp_path / "adapter0")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    got = run_engine(tmp_path, model_dir, tmp_path / "adapter0", batches, base, True, steps=0,
                     save_adapter=tmp_path / "saved")
    saved_config = json.loads((tmp_path / "saved" / "adapter_config.json").read_text())
    assert saved_config["use_dora"] is True
    saved = load_file(tmp_path / "saved" / "adapter_model.safetensors")
    assert sum("lora_magnitude_vector" in k for k in saved) == 7 * config.num_hidden_layers
    base_model = (load_nf4_base(model_dir) if base == "nf4" else
                  AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32))
    loaded = PeftModel.from_pretrained(base_model, tmp_path / "saved").eval()
    with torch.no_grad():
        logits = loaded(input_ids=batches["input_ids_0"]).logits
    assert rel(got["logits"], logits) < 1e-4


def run_cuda_bf16(tmp_path, base, use_dora):
    """The comparison on a GPU in bf16 (rigtune: the base dequantized or kept
    in bf16, bf16 compute, float32 adapter masters; the reference: transformers
    + PEFT in bf16 with PEFT's float32 adapters, over the engine's own base
    weights). Tolerances are bf16's (test_engine.BF16_TOLERANCE); PEFT takes
    DoRA's weight norm in bf16, rigtune in float32."""
    config, model_dir = save_random_model(tmp_path, "llama_gqa_llama3rope")
    init = reference(model_dir, "bf16", use_dora)
    init.save_pretrained(tmp_path / "adapter0")
    batches = make_batches(config.vocab_size, 2, 24, seed=2)
    save_file(batches, tmp_path / "batches.safetensors")
    spec = {"model_dir": str(model_dir), "adapter_dir": str(tmp_path / "adapter0"),
            "batches": str(tmp_path / "batches.safetensors"), "out": str(tmp_path / "out.safetensors"),
            "lora": {"r": R, "alpha": ALPHA, "target_modules": TARGETS, "use_dora": use_dora},
            "optim": OPTIM, "steps": STEPS, "grad_accum": 2, "device": "cuda", "dtype": "bf16",
            "base": base}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    subprocess.run([TOOL, str(tmp_path / "spec.json")], check=True)
    got = load_file(tmp_path / "out.safetensors")

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "base." + n in got:
                p.copy_(got["base." + n].to(torch.bfloat16))
    ref = PeftModel.from_pretrained(model, tmp_path / "adapter0", is_trainable=True)
    ref.eval()
    with torch.no_grad():
        logits = ref(input_ids=batches["input_ids_0"].cuda()).logits.float().cpu()
    results = {"logits": rel(got["logits"], logits)}
    ref.train()
    trainable = [(n, p) for n, p in ref.named_parameters() if p.requires_grad]
    loss0 = accumulate(ref, batches, 0, "cuda")
    results["loss"] = abs(got["loss"].item() - loss0) / abs(loss0)
    results["grad"] = max(rel(got["grad." + engine_key(n)], p.grad.float().cpu())
                          for n, p in trainable)
    ref.zero_grad(set_to_none=True)
    opt = torch.optim.AdamW([p for _, p in trainable], lr=LR, betas=(0.9, 0.95), eps=1e-8,
                            weight_decay=0.01, foreach=False)
    losses = []
    for s in range(STEPS):
        losses.append(accumulate(ref, batches, s, "cuda"))
        torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    results["trajectory"] = max(abs(a - b) / abs(b) for a, b in zip(got["losses"].tolist(), losses))
    return results


CUDA_CASES = [("bf16", False), ("nf4", True), ("bf16", True)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("base,use_dora", CUDA_CASES)
def test_bf16_cuda_matches_peft(tmp_path, base, use_dora):
    from test_engine import BF16_TOLERANCE

    results = run_cuda_bf16(tmp_path, base, use_dora)
    for key, tol in BF16_TOLERANCE.items():
        assert results[key] < tol, (key, results[key])


if __name__ == "__main__":
    # On the GPU machine (which may lack pytest): one row per case.
    import pathlib
    import sys
    import tempfile

    from test_engine import BF16_TOLERANCE

    failed = 0
    print("| base | method | logits rel | loss rel | max grad rel | max trajectory rel | ok |")
    print("|---|---|---|---|---|---|---|")
    for base, use_dora in CUDA_CASES:
        with tempfile.TemporaryDirectory() as d:
            r = run_cuda_bf16(pathlib.Path(d), base, use_dora)
        ok = all(r[k] < t for k, t in BF16_TOLERANCE.items())
        failed += not ok
        print(f"| {base} | {'dora' if use_dora else 'lora'} | {r['logits']:.2e} | {r['loss']:.2e} | "
              f"{r['grad']:.2e} | {r['trajectory']:.2e} | {'yes' if ok else 'NO'} |")
    sys.exit(1 if failed else 0)
