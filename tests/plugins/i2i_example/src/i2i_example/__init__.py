"""An example third-party i2i plugin."""
