"""The README's Python example runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {"__name__": "readme"})


def test_readme_shows_setup_commands_first():
    text = README.read_text()
    assert text.index("make demo") < text.index("## ")
    assert text.index("make test") < text.index("## ")


def test_readme_debugger_transcript_is_current():
    import subprocess
    import sys

    text = README.read_text()
    cmd = "d1 debug programs/asm/deadlock.d1s --mesh 4x4 --batch -ex run"
    start = text.index(f"$ {cmd}\n") + len(f"$ {cmd}\n")
    shown = text[start:text.index("```", start)]
    r = subprocess.run([sys.executable, "-m", "d1", *cmd.split()[1:]], capture_output=True,
                       text=True, cwd=README.parent, timeout=300)
    assert r.stdout + r.stderr == shown


def test_examples_name_the_example_programs_by_their_paths():
    """A `d1 ...` example in a help text, the README or docs/ that names one of programs/'s
    files names it by its path from the top of a checkout (where the examples are run), unless
    an `-o` of the same text writes a file of that name first. `d1 scale --help` showed
    `d1 scale train_mlp784.d1k ...`, which fails with 'cannot read train_mlp784.d1k'."""
    root = README.parent
    programs = {p.name for p in (root / "programs").rglob("*") if p.is_file()}
    files = [*sorted((root / "d1").rglob("*.py")), README, *sorted((root / "docs").glob("*.md"))]
    bad = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        written = set(re.findall(r"\s-o\s+(\S+)", text))
        for line in text.splitlines():
            if not re.search(r"\bd1 [a-z]+ ", line):
                continue
            for tok in re.findall(r"[\w/.-]+\.(?:d1k|d1s|onnx)\b", line):
                if Path(tok).name in programs and tok not in written and not (root / tok).exists():
                    bad.append(f"{f.relative_to(root)}: {tok}: {line.strip()}")
    assert not bad, "\n".join(bad)
