"""Generation: sampling with temperature, top-k, top-p and a KV cache; later beam search."""
