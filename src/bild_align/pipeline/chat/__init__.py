"""`bild-align chat`: an interactive console over a pair."""
