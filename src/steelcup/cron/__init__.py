"""Cron jobs: an image run on a schedule, each run a fresh container in a fresh VM, with a
history of runs (docs/cron.md)."""
