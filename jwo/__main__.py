"""`python -m jwo ...` is the same as the `jwo` console script."""

from jwo.cli import app

if __name__ == "__main__":
    app(prog_name="jwo")
