"""``python -m beanraft.node`` runs the ``beanraft`` command line."""

from .cli import main

main()
