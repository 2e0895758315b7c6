"""Loading pairs and the model pieces the commands share: drafters, fallback heads, saved
policies, batched greedy generation, BiLD inside `generate`, random pairs built in code."""
