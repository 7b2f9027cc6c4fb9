"""The typer application: one module per command, shared options, one stderr console."""
