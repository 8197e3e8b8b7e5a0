"""The command line: ``python clock.py`` / ``dynoclock`` and its commands."""
