"""Parts that fail on purpose, for testing how i2i reacts."""
