"""Storage: the run folder's layout, the checkpoint format, atomic writes, digests and the cache."""
