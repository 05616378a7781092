"""A third-party plugin that opens the training loop: a callback with state, Lion, a schedule and a command."""
