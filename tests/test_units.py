"""d1isa.units: how figures are printed with their units."""

from d1isa import units


def test_si_prefixes_and_a_bare_number_without_a_trailing_space():
    assert units.si(1.234e12, "FLOP/s") == "1.23 TFLOP/s"
    assert units.si(20.7e6, "") == "20.7 M"
    # `d1 run --stats` appends " node-instructions/s": a rate under 1000 printed
    # "0  node-instructions/s" with two spaces
    assert units.si(0, "") == "0"
    assert units.si(512, "B") == "512 B"
