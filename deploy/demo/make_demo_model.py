#!/usr/bin/env python3
"""Creates the demo's tiny base model: a randomly initialised Llama-style
model in Hugging Face layout (config.json, model.safetensors) with a byte-level
BPE tokenizer (tokenizer.json, tokenizer_config.json) trained on the demo data.

    make_demo_model.py OUT_DIR [--data alpaca_demo.jsonl] [--seed 0]

The model is small enough to train for a few dozen steps on a laptop CPU in
seconds; it exists so that the whole path (tokenize, format, pack, train,
export a PEFT adapter) runs anywhere without downloading weights.
"""
import argparse
import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--data", default=os.path.join(here, "alpaca_demo.jsonl"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    texts = []
    with open(args.data) as f:
        for line in f:
            ex = json.loads(line)
            texts += [ex["instruction"], ex.get("input", ""), ex["output"]]
    texts += ["Below is an instruction that describes a task. Write a response that "
              "appropriately completes the request. ### Instruction: ### Input: ### Response:"]

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id(specials[0])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{specials[0]} $A", pair=f"{specials[0]} $A {specials[0]} $B",
        special_tokens=[(specials[0], bos)])
    tok.save(os.path.join(args.out_dir, "tokenizer.json"))
    with open(os.path.join(args.out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": specials[0], "eos_token": specials[1], "add_bos_token": True,
                   "add_eos_token": False, "model_max_length": 1024,
                   "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=2)

    torch.manual_seed(args.seed)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=128, intermediate_size=352,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, rms_norm_eps=1e-5,
                         bos_token_id=bos, eos_token_id=tok.token_to_id(specials[1]),
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(args.out_dir, safe_serialization=True)
    print(f"demo model: {sum(p.numel() for p in model.parameters())} parameters, "
          f"vocab {config.vocab_size}, in {args.out_dir}")


if __name__ == "__main__":
    main()
