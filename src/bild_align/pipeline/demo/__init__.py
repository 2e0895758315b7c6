"""`bild-align demo`: the whole pipeline, offline, on the shipped pairs."""
