"""The README's concepts picture can be redrawn from the code it illustrates."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).parent.parent / "docs" / "make_concepts_figure.py"


def test_concepts_figure_is_drawn_from_a_real_run(tmp_path):
    spec = importlib.util.spec_from_file_location("make_concepts_figure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    trace, summary = module.dynhp_trace()
    assert (trace["memory_bytes"] <= summary["budget_bytes"]).all()
    assert trace["batch_size"].max() > trace["batch_size"].iloc[0]
    out = tmp_path / "concepts.png"
    module.main(["--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
