"""The lever and target tables: what they say about a report, from reports built by hand (the arithmetic the
README's target table rests on)."""

from tchaikovsky.evaluation.intervals import Rate
from tchaikovsky.evaluation.levers import diversity_ratio, lever_table, runs_table, target_rows, target_table


def _row(value, k, n, ceiling, chance, diversity=None, real=None):
    return {"value": value, "conditioned": Rate(k, n).to_dict(), "ceiling": Rate(*ceiling).to_dict(),
            "chance": Rate(*chance).to_dict(), "n": n, "oa": 0.8, "copies": 0, "diversity": diversity,
            "diversity_real": real}


def _report(rows):
    return {"label": "composer", "role": "test", "table": rows, "failed": {"asked": 1, "any": 0, "n_any": 16},
            "pooled": {"lift": 0.3, "lo": 0.1, "hi": 0.5}}


def test_target_rows_needs_both_the_share_of_the_ceiling_and_an_interval_above_chance():
    rows = target_rows(_report([
        _row("Bach", 13, 16, (9, 10), (2, 16)),        # 0.81 >= 0.8 * 0.9, interval well above chance
        _row("Monteverdi", 9, 16, (8, 10), (3, 16)),   # 0.56 < 0.64: short by 0.08
        _row("Palestrina", 3, 4, (10, 10), (2, 4)),    # 0.75 < 0.8, and n = 4 leaves the interval over chance
    ]))
    bach, monteverdi, palestrina = rows
    assert bach["reached"] and bach["above_chance"]
    assert not monteverdi["reached"] and abs(monteverdi["short_by"] - (0.8 * 0.8 - 9 / 16)) < 1e-9
    assert monteverdi["above_chance"]
    assert not palestrina["reached"] and not palestrina["above_chance"]


def test_tables_show_every_row_and_the_diversity_ratio():
    a = _report([_row("Bach", 13, 16, (9, 10), (2, 16), diversity=2.0, real=4.0)])
    b = _report([_row("Bach", 5, 16, (9, 10), (2, 16), diversity=4.0, real=4.0)])
    assert diversity_ratio(a) == 0.5 and diversity_ratio(b) == 1.0
    table = lever_table({"g=1": b, "g=2": a}, "guidance")
    assert table.count("\n") == 3 and "| g=2 |" in table and "0.81" in table and "0.50" in table
    # each row against the first (13/16 - 5/16 = +0.50, its Newcombe interval excluding 0); the first shows none
    assert "recognised - g=1 [95%]" in table and "| +0.50 [+0.16, +0.71] |" in table.splitlines()[3]
    assert "| – |" in table.splitlines()[2]
    assert "recognised - g=2 [95%]" in lever_table({"g=1": b, "g=2": a}, "guidance", baseline="g=2")
    assert "no (short by" not in target_table(a) and "no (short by" in target_table(b)


def test_two_runs_side_by_side_with_the_interval_of_each_difference():
    a = {"composer": _report([_row("Bach", 13, 16, (9, 10), (2, 16)), _row("Monteverdi", 9, 16, (8, 10), (3, 16))])}
    b = {"composer": _report([_row("Bach", 5, 16, (9, 10), (2, 16)), _row("Palestrina", 4, 4, (1, 1), (0, 4))])}
    lines = runs_table(a, b, "guided", "plain").splitlines()
    assert lines[0] == "| asked for (test) | guided: recognised [95%] | plain: recognised [95%] | difference [95%] |"
    assert lines[2] == "| Bach | 0.81 [0.57, 0.93] (13/16) | 0.31 [0.14, 0.56] (5/16) | +0.50 [+0.16, +0.71] |"
    assert len(lines) == 4 and "Monteverdi" not in lines[3]  # values only one run asked for are left out, pooled too
    assert lines[3] == "| **composer, all** | 0.81 [0.57, 0.93] (13/16) | 0.31 [0.14, 0.56] (5/16) | **+0.50 [+0.16, +0.71]** |"
