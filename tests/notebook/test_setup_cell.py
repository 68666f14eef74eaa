"""The notebooks' set-up cell has one source (tchaikovsky/notebook/setup_cell.py): a copy that drifts fails here."""

import shutil

import pytest

from tchaikovsky.notebook import setup_cell
from tchaikovsky.notebook.runner import NOTEBOOK_DIR, NOTEBOOKS


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_carries_the_one_set_up_cell(name):
    assert not setup_cell.drifted(NOTEBOOK_DIR / f"{name}.py"), \
        f"{name}.py: run `python -m tchaikovsky.notebook.setup_cell --write` then `make sync`"


def test_a_drifted_copy_is_found_and_rewritten(tmp_path):
    nb = tmp_path / "nb.py"
    shutil.copy(NOTEBOOK_DIR / f"{NOTEBOOKS[0]}.py", nb)
    nb.write_text(nb.read_text().replace("the tests point this", "tests point this"))
    assert setup_cell.drifted(nb) and setup_cell.main([str(nb)]) == 1
    assert setup_cell.write(nb) and not setup_cell.drifted(nb) and setup_cell.main([str(nb)]) == 0
    assert nb.read_text().replace(setup_cell.BLOCK, "") == \
        (NOTEBOOK_DIR / f"{NOTEBOOKS[0]}.py").read_text().replace(setup_cell.BLOCK, "")  # only the block changed
    with pytest.raises(ValueError, match="no set-up block"):
        setup_cell.span("print(1)\n")
