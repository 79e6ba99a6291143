from .cli import main

main(prog_name="bootgen")  # also names the shell completion variable: _BOOTGEN_COMPLETE
