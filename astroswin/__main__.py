"""``python -m astroswin``: the same as the ``astroswin`` command."""

from astroswin.cli import main

main()
