"""`bild-align eval`: quality, speed and decoder statistics of the pair and baselines."""
