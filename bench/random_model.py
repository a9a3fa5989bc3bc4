"""A randomly initialised Llama-architecture model of a real model's shape, for GPU runs with no model hub.

    python bench/random_model.py --shape smollm2-1.7b --tokenizer .gpu/tokenizer --out /tmp/rand-1.7b

The weights are random (answers are gibberish); the shape, and so the speed and memory, are the real model's.
"""
import argparse

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

SHAPES = {  # hidden, layers, heads, kv heads, intermediate, tied embeddings, rope_theta
    "smollm2-135m": dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         intermediate_size=1536, tie_word_embeddings=True, rope_theta=100000.0),
    "smollm2-1.7b": dict(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, num_key_value_heads=32,
                         intermediate_size=8192, tie_word_embeddings=True, rope_theta=130000.0),
    # Llama-3.1-8B's shape, with the embedded tokenizer's vocabulary (49152) instead of 128256
    "llama-3.1-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=14336, tie_word_embeddings=False, rope_theta=500000.0),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2-1.7b")
    parser.add_argument("--tokenizer", default=".gpu/tokenizer", help="tokenizer folder saved with the model")
    parser.add_argument("--out", required=True, help="folder to write the model to")
    parser.add_argument("--max-position-embeddings", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = LlamaConfig(vocab_size=49152, max_position_embeddings=args.max_position_embeddings,
                         rms_norm_eps=1e-5, hidden_act="silu", bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         **SHAPES[args.shape])
    assert len(tokenizer) <= config.vocab_size, "the tokenizer does not fit the vocabulary"
    torch.manual_seed(args.seed)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"Random {args.shape}: {n:,} parameters ({n / 1e9:.3f} B), bf16, saved to {args.out}")


if __name__ == "__main__":
    main()
