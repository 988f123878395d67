#!/usr/bin/env python3
"""The 4-bit peers rigtune's QLoRA step is measured against, with train_bench's
shapes and settings (random weights, random tokens, LoRA r=64 alpha=16 on all
seven linears, bf16 compute, activation checkpointing, AdamW):

    qlora_peer_bench.py --peer unsloth --shape llama2-7b --batch 4 --seq 2048 --steps 6
    qlora_peer_bench.py --peer hf-bnb  --shape llama3-8b ...

  unsloth  Unsloth, load_in_4bit, use_gradient_checkpointing="unsloth"
  hf-bnb   transformers + PEFT + bitsandbytes NF4 (double quant, bf16 compute),
           non-reentrant gradient checkpointing, SDPA attention

Both load a saved random bf16 model of the shape (with a tiny tokenizer):
written once to --model-dir/<shape> (default /tmp/peer-models; 7B is ~13.5 GB)
and reused. The first step is a warm-up. Prints one markdown row:
  | system | shape | batch x seq | ckpt | tok/s | step s | peak alloc GiB |
Needs a CUDA GPU plus bitsandbytes (and unsloth for --peer unsloth); on the
GPU machine they come from .device/peer-site.tgz (tests/gpu/run.sh peer).
"""
import argparse
import os
import sys

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--peer", required=True, choices=["unsloth", "hf-bnb"])
    ap.add_argument("--shape", default="llama2-7b")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--model-dir", default="/tmp/peer-models")
    return ap.parse_args()


def save_random_model(shape, root):
    """A random bf16 Llama of `shape` plus a tokenizer, saved under root/shape once."""
    import torch
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from hf_peft_bench import SHAPES

    path = os.path.join(root, shape)
    if os.path.exists(os.path.join(path, "config.json")):
        return path
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    specials = ["<unk>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials)}
    vocab.update({f"t{i}": i for i in range(len(specials), 256)})
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, "<unk>")),
                                  unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<unk>")
    tok.save_pretrained(path)
    return path


def load_unsloth(path, args):
    import torch
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(path, max_seq_length=args.seq,
                                                 dtype=torch.bfloat16, load_in_4bit=True)
    return FastLanguageModel.get_peft_model(
        model, r=64, lora_alpha=16, lora_dropout=0, target_modules=TARGETS, bias="none",
        use_gradient_checkpointing="unsloth", random_state=0)


def load_hf_bnb(path, args):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quant,
                                                 dtype=torch.bfloat16, device_map={"": 0},
                                                 attn_implementation="sdpa")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    return get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.0,
                                            target_modules=TARGETS, task_type="CAUSAL_LM"))


def main():
    args = parse_args()
    if args.peer == "unsloth":
        import unsloth  # noqa: F401  (must come before transformers: it patches it)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from hf_peft_bench import SHAPES, train_and_report

    if args.shape not in SHAPES:
        sys.exit(f"--shape: unknown shape '{args.shape}' (use one of {', '.join(sorted(SHAPES))})")
    path = save_random_model(args.shape, args.model_dir)
    load = load_unsloth if args.peer == "unsloth" else load_hf_bnb
    model = load(path, args)
    system = "Unsloth 4-bit" if args.peer == "unsloth" else "HF+PEFT+bnb NF4"
    train_and_report(model, system, args, SHAPES[args.shape]["vocab_size"], ckpt=True)


if __name__ == "__main__":
    main()
