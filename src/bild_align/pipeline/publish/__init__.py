"""`bild-align push` and `bild-align export-generate`."""
