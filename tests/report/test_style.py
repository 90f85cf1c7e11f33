"""Each optimizer column keeps one colour in every figure, whatever else is drawn."""

import pytest

from benchsuite.report.style import optimizer_color, optimizer_palette

LABELS = ["sgd", "adam", "rmsprop", "kfgn-kfra", "kfgn-kflr", "kfgn-kfac", "hf", "diag_gn", "diag_gn-mc"]


def test_builtin_columns_have_distinct_colours():
    colours = [optimizer_color(x) for x in LABELS]
    assert len(set(colours)) == len(colours)


@pytest.mark.parametrize("label", [*LABELS, "kfgn-kflr-lm", "my_optimizer"])
def test_colour_does_not_depend_on_the_other_columns(label):
    alone = optimizer_palette([label])[label]
    among = optimizer_palette(["zzz", *reversed(LABELS), label, "aaa"])[label]
    assert alone == among


def test_variant_is_shaded_from_its_family_but_not_equal():
    assert optimizer_color("kfgn-kflr-lm") != optimizer_color("kfgn-kflr")
