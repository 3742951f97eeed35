"""``python -m gridlrt``: the same as the ``gridlrt`` command (used by pilots on worker nodes,
where no console script is installed)."""

from gridlrt.cli import main

if __name__ == "__main__":
    main()
