"""The ``promocodes`` command line (Typer + rich)."""
