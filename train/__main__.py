"""``python -m astroswin.train CONFIG ...``: the same as ``astroswin train``."""

from .cli import train_command

if __name__ == "__main__":
    train_command(prog_name="python -m astroswin.train")
