"""A fresh store ready for an encode step with a given codebook (the benchmarks of pass 2)."""
import json
import shutil
from pathlib import Path


def store_with_codebook(codebook, out) -> Path:
    """Empty ``out`` and give it the codebook and the steps of the codebook's manifest, not
    its job (pass 1 saw the whole corpus; the encode step may run on a part): the codebook's
    path in ``out``."""
    codebook, out = Path(codebook), Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    manifest = json.loads((codebook.parent / "manifest.json").read_text())
    manifest.pop("job", None)
    (out / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(codebook, out / codebook.name)
    return out / codebook.name
