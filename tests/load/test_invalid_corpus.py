"""The invalid-input corpus: each file in tests/corpus/invalid/ is a node file
added to the example site, and its `# expect:` lines are exactly the problems
(file:line:col, field path, message) that a build must report, all in one run."""
from pathlib import Path

import pytest

from bootgen.build import plan_build
from bootgen.errors import InputError

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "invalid"
CASES = sorted(CORPUS.glob("*.yaml"))


def _expectations(case: Path, tag: str) -> list[str]:
    prefix = f"# {tag}: "
    return [line[len(prefix):] for line in case.read_text().splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_invalid_node_reports_exact_problems(example, case):
    (example.nodes / case.name).write_bytes(case.read_bytes())
    with pytest.raises(InputError) as err:
        plan_build(example, fetch=False)
    reported = [p.format().split("\n")[0] for p in err.value.problems]
    assert reported == _expectations(case, "expect")
    hints = [p.hint for p in err.value.problems if p.hint]
    for hint in _expectations(case, "expect-hint"):
        assert hint in hints


def test_corpus_is_not_empty():
    assert len(CASES) >= 10
