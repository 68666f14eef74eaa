"""The generation layer: KV-cached batched sampling (``sampling``), the tokenizer's grammar as a mask
(``grammar``), prompts (``prompts``) and short scores written in code (``scores``)."""
