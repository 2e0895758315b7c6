"""Models and helpers for tests and benchmarks, built in code (no downloads):

from bild_align.testing.toy_models import random_t5, deepen      # pairs with a chosen agreement
from bild_align.testing.scripted import ScriptedSeq2Seq          # the test scripts each token
from bild_align.testing.helpers import byte_level_model, write_pairs
"""
