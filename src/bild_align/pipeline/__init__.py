"""One folder per command: its config (light: `--help` reads it without torch), its
`command.run_*`, and the pieces only it uses."""
