"""`bild-align tune`: the fastest setting within a quality budget."""
