"""``python -m wsol`` (and ``torchrun -m wsol``) runs the command line."""
from wsol.cli import entry_point

if __name__ == "__main__":
    entry_point()
