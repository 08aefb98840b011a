"""``python -m benchkit``: the same command line as the ``benchkit`` console script."""

from benchkit.cli import main

if __name__ == "__main__":
    main()
