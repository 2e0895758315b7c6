"""Test fixtures built in code (no downloads); the random pairs themselves, which `bench` uses
too, are `bild_align.models.toy`:

from bild_align.testing.scripted import ScriptedSeq2Seq          # the test scripts each token
from bild_align.testing.helpers import byte_level_model, write_pairs
"""
