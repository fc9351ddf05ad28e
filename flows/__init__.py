"""Prefect flows and the fgrpo command line."""
