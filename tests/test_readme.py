"""The README's Python API example runs as written, and CI runs the README's test command."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["images"].shape == (8, 1, 28, 28)
    assert namespace["log_px"].shape == (16,)
    assert (tmp_path / "my_model" / "model.safetensors").is_file()


def test_ci_runs_the_readme_test_command():
    extract = "awk '/<!-- test-command -->/ {found = 1; next} found && /^```bash/ {inside = 1; next} inside && /^```/ {exit} inside' README.md"
    command = subprocess.run(
        extract, shell=True, cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert command.endswith("python -m pytest") and "pip install torch==2.13.0" in command
    assert extract.split(" README.md")[0] in (ROOT / ".ci" / "run").read_text()
