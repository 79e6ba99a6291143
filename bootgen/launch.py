"""The `bootgen` program: a build the resident builder can run is handed to it before
anything heavy is imported (bootgen.resident); everything else is the click CLI."""
import sys


def main() -> None:
    from .resident import forward

    status = forward(sys.argv[1:])
    if status is not None:
        sys.exit(status)
    from .cli import main as cli_main

    cli_main(prog_name="bootgen")  # also names the shell completion variable: _BOOTGEN_COMPLETE
