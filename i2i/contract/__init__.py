"""The plugin contract: the part interfaces, declared options and the registry that finds parts."""
