"""The README's "Python API" section, run as written: one test per example, in a folder
laid out as `features demo` leaves it (`features-demo/images`, `features-demo/store` with
spm, vlad and fisher added), made from the small set with the small recipe."""
import re
import shutil
from pathlib import Path

import pytest

from features.index import current_index_paths

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples():
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return [(b.splitlines()[0].lstrip("# ").strip(), b) for b in blocks]


EXAMPLES = _examples()


def test_the_section_has_its_examples():
    titles = [t for t, _ in EXAMPLES]
    assert len(titles) == 6, titles
    for words in ("reading", "encodings", "models", "search", "encoded", "pipeline"):
        assert any(words in t for t in titles), (words, titles)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory, small_set, small_config):
    from features.pipeline import run
    root = tmp_path_factory.mktemp("api")
    shutil.copytree(small_set, root / "features-demo" / "images")
    run(small_config, str(root / "features-demo" / "images"), root / "features-demo" / "store",
        progress=False, encodings=("spm", "vlad", "fisher"))
    return root


@pytest.mark.parametrize("code", [c for _, c in EXAMPLES], ids=[t for t, _ in EXAMPLES])
def test_readme_example(code, demo_dir, monkeypatch, capsys):
    monkeypatch.chdir(demo_dir)
    # run as a script is run: the examples that start the pipeline guard it with __main__
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    if "features.run(" in code:
        store = Path("features-demo/store-64")
        assert (store / "store.h5").exists()
        assert all(p.exists() for p in current_index_paths(store).values())
        assert capsys.readouterr().out.splitlines()[-1].split() == ["24", "0"]


def test_the_examples_use_only_the_public_names():
    import features
    used = set()
    for _, code in EXAMPLES:
        used |= set(re.findall(r"\bfeatures\.([A-Za-z_]+)\(", code))
    assert used <= set(features.__all__), used - set(features.__all__)
