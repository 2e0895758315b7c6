"""The decoder steps behind one contract: the lean steps of our own (T5, BART and Llama
families) and transformers' forward; `lean.lean_decoder` says which one runs."""
