"""Shared helpers: atomic I/O, seeding, devices, progress bars, distributed."""
