"""The Pulses benchmark: ``python -m bench`` (see ``docs/performance.md``)."""
