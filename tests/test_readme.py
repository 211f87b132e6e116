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
