"""Run each example of the README's "Python API" section as a user would: `python -` in the
clone's root, with the package installed (not this checkout) and the store `features demo`
left in `features-demo/`, after the aggregations the section says it needs. Exits non-zero
naming the first example that fails."""
import re
import subprocess
import sys
from pathlib import Path

readme = Path("README.md").read_text()
section = readme[readme.index("\n## Python API"):]
section = section[:section.index("\n## ", 1)]
examples = re.findall(r"```python\n(.*?)```", section, re.S)
if not examples:
    sys.exit("README: no Python API examples found")
for method in ("spm", "vlad", "fisher"):
    subprocess.run(["features", "aggregate", "features-demo/store", "--method", method, "-q"],
                   check=True)
for n, code in enumerate(examples, 1):
    first = code.strip().splitlines()[0]
    proc = subprocess.run([sys.executable, "-"], input=code, text=True)
    if proc.returncode:
        sys.exit(f"README Python API example {n} ({first}) failed with exit {proc.returncode}")
    print(f"README Python API example {n} ({first}): ok")
