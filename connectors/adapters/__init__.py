"""adapters stage."""
