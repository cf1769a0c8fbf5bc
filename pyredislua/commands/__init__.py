"""Area subcommands of the ``pyredislua`` command line: each module exposes
``register(subparsers)``."""
