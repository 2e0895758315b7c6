"""`bild-align drafter`: a small model made from the large one."""
