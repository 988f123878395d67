#!/usr/bin/env python3
"""The peer rigtune is measured against: Hugging Face transformers + PEFT,
bf16 base weights, LoRA r=64 on all linears, SDPA attention, AdamW.

    hf_peft_bench.py --shape llama2-7b --batch 4 --seq 2048 --steps 6 [--no-checkpointing]

Random weights of the named shape (no download). The first step is a warm-up.
Prints one markdown row: | system | shape | batch x seq | ckpt | tok/s | step s | peak alloc GiB |
(qlora_peer_bench.py reuses SHAPES and train_and_report for the 4-bit peers.)
"""
import argparse
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

SHAPES = {
    "llama2-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32),
    "llama3-8b": dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      rope_theta=500000.0),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--shape", default="llama2-7b", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--no-checkpointing", action="store_true")
    args = ap.parse_args()

    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[args.shape], max_position_embeddings=8192,
                         attn_implementation="sdpa")
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    ckpt = not args.no_checkpointing
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    train_and_report(model, "HF+PEFT bf16", args, config.vocab_size, ckpt)


def train_and_report(model, system, args, vocab_size, ckpt):
    """AdamW steps on random tokens; prints the markdown row (first step = warm-up)."""
    # from_pretrained returns the model in eval mode, where transformers (and
    # Unsloth) skip gradient checkpointing: train as a Trainer would.
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, vocab_size, (args.batch, args.seq), device="cuda")
    times = []
    torch.cuda.reset_peak_memory_stats()
    for step in range(args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        print(f"step {step + 1} loss {loss.item():.4f} {times[-1]:.3f} s", flush=True)
    step_s = sum(times[1:]) / len(times[1:])
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"| {system} | {args.shape} | {args.batch} x {args.seq} | {'on' if ckpt else 'off'} | "
          f"{args.batch * args.seq / step_s:.0f} | {step_s:.3f} | {peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()
