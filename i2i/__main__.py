"""`python -m i2i` is the same as the `i2i` command (so torchrun can launch it)."""

from i2i.cli import main

if __name__ == "__main__":
    main()
