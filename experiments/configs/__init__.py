"""Configs: `get_config(arg)` returns a locked ml_collections.ConfigDict."""
