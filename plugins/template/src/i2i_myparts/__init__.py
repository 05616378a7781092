"""i2i-myparts: my parts for i2i, registered by the entry point `parts` in pyproject.toml (the module parts.py)."""
