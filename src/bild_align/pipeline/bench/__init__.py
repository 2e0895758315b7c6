"""`bild-align bench`: the decoder micro-benchmark on pairs built in code."""
