"""The decoder core: token ids in, token ids and counts out; no tokenizer, no I/O, no timing.

    from bild_align.core.decoding import bild_generate, speculative_generate
    from bild_align.core.cache import DecoderState      # one model's encoder output + KV cache
    from bild_align.core.sampling import Sampler        # greedy / temperature / top-k / top-p

Nothing here imports the rest of bild_align (a test checks it).
"""
