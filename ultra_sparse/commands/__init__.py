"""One module per ``ultra-sparse`` mode, each with ``HELP``, ``KEYS`` and ``run(args)``."""
