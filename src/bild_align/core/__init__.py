"""The decoder core: token ids in, token ids and counts out; no tokenizer, no I/O, no timing.

    from bild_align.core.decoding import bild_generate, speculative_generate
    from bild_align.core.policies import falls_back, rollback_index   # BiLD's two decisions
    from bild_align.core.stats import BiLDStats         # exact counts and derived rates
    from bild_align.core.engines.hf_forward import DecoderState  # encoder output + KV cache
    from bild_align.core.sampling import Sampler        # greedy / temperature / top-k / top-p

Nothing here imports the rest of bild_align (a test checks it).
"""
