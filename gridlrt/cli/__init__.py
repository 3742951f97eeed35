"""The ``gridlrt`` command line: thin typer commands that parse, call the library, and print.

No business logic lives here. Errors a user can fix (:class:`~gridlrt.errors.GridlrtError`)
become one red line on stderr and a non-zero exit, never a traceback.
"""

from gridlrt.cli.app import app, main

__all__ = ["app", "main"]
