"""i2i-myparts: my parts for i2i (registered through the `i2i` entry points in pyproject.toml)."""
