"""Shell completion through click's own mechanism, as the README documents it."""
import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _bootgen(env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "bootgen"], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bash_and_zsh_scripts_are_produced():
    assert "complete -o nosort -F _bootgen_completion bootgen" in _bootgen({"_BOOTGEN_COMPLETE": "bash_source"})
    assert _bootgen({"_BOOTGEN_COMPLETE": "zsh_source"}).startswith("#compdef bootgen")
    assert "complete --no-files --command bootgen" in _bootgen({"_BOOTGEN_COMPLETE": "fish_source"})


def test_commands_and_options_complete():
    words = {"_BOOTGEN_COMPLETE": "bash_complete", "COMP_WORDS": "bootgen pu", "COMP_CWORD": "1"}
    assert _bootgen(words).split() == ["plain,publish"]
    options = {"_BOOTGEN_COMPLETE": "bash_complete", "COMP_WORDS": "bootgen build --for", "COMP_CWORD": "2"}
    assert _bootgen(options).split() == ["plain,--format"]


def test_readme_documents_the_lines_tested_here():
    text = README.read_text()
    assert re.search(r"eval \"\$\(_BOOTGEN_COMPLETE=bash_source bootgen\)\"", text)
    assert "_BOOTGEN_COMPLETE=zsh_source bootgen" in text and "_BOOTGEN_COMPLETE=fish_source bootgen" in text
