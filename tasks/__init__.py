"""Prefect tasks: thin wrappers over fgrpo_core."""
