"""`bild-align calibrate`: the large model's outputs as a calibration dataset."""
