"""`bild-align train`: align the small model (or a drafter) on the calibration data."""
