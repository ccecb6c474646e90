"""``python -m pulses`` is the ``pulses`` command."""

from pulses.cli import main

main()
