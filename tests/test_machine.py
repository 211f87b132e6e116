"""The machine description: loading, validation, overrides and derived figures."""

from pathlib import Path

import numpy as np
import pytest

from d1isa.errors import MachineError
from d1isa.machine import OPPOSITE, PARAMS, Machine, load_machine, machine_names, parse_sets


def test_default_machine_headline_figures():
    m = load_machine()
    assert (m.cols, m.rows, m.n_live) == (18, 20, 354)
    assert len(m.harvested) == 6
    assert m.peak_flops["bf16"] == pytest.approx(362.496e12)
    assert m.peak_flops["f32"] == pytest.approx(22.656e12)
    assert m.total_sram_bytes == 354 * 1310720
    assert m.clock_hz == 2e9


def test_machine_is_immutable_and_arrays_read_only():
    m = load_machine()
    with pytest.raises(AttributeError):
        m.cols = 3
    with pytest.raises(ValueError):
        m.neighbors[0, 0] = 5


def test_every_param_is_a_dataclass_field():
    fields = set(Machine.__dataclass_fields__)
    assert fields == {p.key for p in PARAMS}


def test_named_machines_load():
    assert {"d1", "m4x4", "h6x5", "tile"} <= set(machine_names())
    assert load_machine("m4x4").n_live == 16
    assert load_machine("h6x5").n_live == 28


def test_mesh_option_replaces_geometry():
    m = load_machine(mesh="4x3")
    assert (m.width, m.height, m.n_live, m.harvested) == (4, 3, 12, ())
    assert m.sram_bytes == load_machine().sram_bytes


def test_ids_are_row_major_over_live_nodes():
    m = load_machine("h6x5")
    assert m.node_xy(0) == (0, 0)
    # (2,1) is harvested, so (3,1) takes id 6 + 2 = 8
    assert m.node_id(3, 1) == 8
    for nid in range(m.n_live):
        assert m.node_id(*m.node_xy(nid)) == nid
    with pytest.raises(MachineError, match="harvested"):
        m.node_id(2, 1)
    with pytest.raises(MachineError, match="outside"):
        m.node_id(6, 0)


def test_send_toward_dead_node_passes_through():
    m = load_machine("h6x5")
    west_of_dead = m.node_id(1, 1)
    east_of_dead = m.node_id(3, 1)
    assert m.neighbors[west_of_dead, 1] == east_of_dead
    assert m.neighbors[east_of_dead, 3] == west_of_dead
    assert m.link_hops[west_of_dead, 1] == 2
    assert m.link_latency[west_of_dead, 1] == 2 * m.hop_latency


def test_edges_have_no_neighbour_and_links_are_symmetric():
    m = load_machine()
    assert m.neighbors[m.node_id(0, 0), 0] == -1
    assert m.neighbors[m.node_id(0, 0), 3] == -1
    for nid in range(m.n_live):
        for d in range(4):
            t = m.neighbors[nid, d]
            if t >= 0:
                assert m.neighbors[t, OPPOSITE[d]] == nid


def test_multichip_links_use_chip_edge_figures():
    m = load_machine(mesh="2x2", overrides={"chips_x": 2, "chip_hop_latency": 50,
                                            "chip_link_bytes_per_cycle": 16})
    assert m.n_live == 8 and m.width == 4
    a = m.node_id(1, 0)
    assert m.neighbors[a, 1] == m.node_id(2, 0)
    assert m.link_latency[a, 1] == 50
    assert m.link_bandwidth[a, 1] == 16
    assert m.link_bandwidth[m.node_id(0, 0), 1] == m.link_bytes_per_cycle


def test_tile_machine_has_8850_nodes():
    m = load_machine("tile")
    assert m.n_live == 25 * 354


def test_bisection_counts_narrower_cut():
    m = load_machine(mesh="4x2")
    # a vertical cut crosses 2 links eastward; a horizontal cut crosses 4
    assert m.bisection_links == 2
    assert m.bisection_bytes_per_s == 2 * 64 * 2e9


@pytest.mark.parametrize("overrides, message", [
    ({"link_bytes_per_cycle": 0}, "must be in 1 .. "),
    ({"cols": "wide"}, "must be an integer"),
    ({"harvested": [[99, 0]]}, "outside the 18x20 grid"),
    ({"harvested": [[1]]}, r"\[x, y\]"),
    ({"bogus": 1}, "unknown machine parameter"),
    ({"scalar_regs": 100}, "must be in 2 .. 64"),
    ({"sram_bytes": 100}, "multiple of 64"),
    ({"clock_hz": "fast"}, "must be a number"),
    # shown on the terminal: an escape sequence there would act on it
    ({"name": "d1\x1b]0;title\x07"}, r"'name' must be printable text.*got 'd1\\x1b"),
    ({"description": "x" * 2000}, r"at most 1,024 characters.*\(2,002 characters\)"),
])
def test_validation_errors_are_clear(overrides, message):
    with pytest.raises(MachineError, match=message):
        load_machine(overrides=overrides)


@pytest.mark.parametrize("text", ["\u00b2x4", "4x\u2074", "\uff14x\uff14"])
def test_mesh_and_chips_take_ascii_digits_only(text):
    # superscripts pass str.isdigit but not int(): an internal error (exit 3) before
    with pytest.raises(MachineError, match="--mesh expects COLSxROWS"):
        load_machine(mesh=text)
    with pytest.raises(MachineError, match="--chips expects"):
        load_machine(chips=text)


def test_a_mesh_or_chips_of_thousands_of_digits_is_out_of_range():
    # int() takes 4,300 digits: an internal error (exit 3) before; the value is cut short
    with pytest.raises(MachineError, match=r"must be in 1 \.\. 1,024, got '9{80}\.\.\. "):
        load_machine(mesh="9" * 5000 + "x4")
    with pytest.raises(MachineError, match=r"--chips dimensions must be in 1 \.\. "):
        load_machine(chips="9" * 5000 + "x4")


def test_set_strings_are_typed():
    d = parse_sets(["link_bytes_per_cycle=32", "clock_hz=1e9", "harvested=[[1,1]]"])
    assert d == {"link_bytes_per_cycle": 32, "clock_hz": 1e9, "harvested": [[1, 1]]}
    with pytest.raises(MachineError, match="KEY=VALUE"):
        parse_sets(["link_bytes_per_cycle"])
    with pytest.raises(MachineError, match="must be an integer"):
        parse_sets(["fifo_depth=1.5"])
    # digits that are not ASCII are refused, as --chips and --mesh refuse them (int() took
    # '٢' and '２' for 2)
    for text in ("chips_x=٢", "chips_x=２", "clock_hz=١e9"):
        with pytest.raises(MachineError, match=r"must be an? (integer|number), got"):
            parse_sets([text])


def test_replace_and_roundtrip_through_dict():
    m = load_machine()
    m2 = m.replace(link_bytes_per_cycle=32)
    assert m2.link_bytes_per_cycle == 32 and m.link_bytes_per_cycle == 64
    assert Machine.from_dict(m2.to_dict()) == m2
    assert m.structural_differences(m2) == []
    assert m.structural_differences(load_machine(mesh="4x4")) == ["cols", "rows", "harvested"]


def test_unknown_machine_name():
    with pytest.raises(MachineError, match="unknown machine 'nope'"):
        load_machine("nope")


def test_machine_file_with_base(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('base = "d1"\nname = "mine"\nfifo_depth = 1\n')
    m = load_machine(str(f))
    assert m.fifo_depth == 1 and m.n_live == 354
    bad = tmp_path / "bad.toml"
    bad.write_text("cols = [")
    with pytest.raises(MachineError, match="invalid TOML"):
        load_machine(str(bad))


@pytest.mark.parametrize("line, message", [
    ('cols = "4"', "'cols' must be an integer"),
    ("fifo_depth = 100000", "'fifo_depth' must be in 1 .. "),
    ('name = "a\\u001bb"', "'name' must be printable text"),
    ('"c\\u00f6ls" = 4', "unknown machine parameter"),
])
def test_a_bad_value_in_a_machine_file_names_the_file(tmp_path, line, message):
    """The message named the parameter but not the file (of a chain of base files, which?)."""
    f = tmp_path / "mine.toml"
    f.write_text(f'base = "d1"\n{line}\n')
    top = tmp_path / "top.toml"
    top.write_text('base = "mine.toml"\n')
    with pytest.raises(MachineError) as e:
        load_machine(str(top))
    assert str(e.value).startswith(f"{f}: ") and message in str(e.value)


def test_arrays_nested_too_deeply_are_machine_errors(tmp_path):
    """tomllib and json read nested arrays recursively: 3,000 levels in a machine file or in
    --set harvested=... were a RecursionError (an internal error, exit 3)."""
    deep = tmp_path / "deep.toml"
    deep.write_text('base = "d1"\nharvested = ' + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(MachineError, match="deep.toml: invalid TOML: nested too deeply"):
        load_machine(str(deep))
    with pytest.raises(MachineError, match=r"'harvested' must be a JSON list .*\(6,000 char"):
        parse_sets(["harvested=" + "[" * 3000 + "]" * 3000])


def test_live_grid_matches_harvest_list():
    m = load_machine()
    dead = np.argwhere(~m.live_grid)
    assert sorted((int(x), int(y)) for y, x in dead) == sorted(m.harvested)


def test_machine_doc_states_every_parameter_range():
    doc = (Path(__file__).resolve().parent.parent / "docs" / "MACHINE.md").read_text()
    for p in PARAMS:
        assert f"| `{p.key}` | {p.unit} | {p.range_text()} |" in doc, p.key


@pytest.mark.parametrize("key, value", [
    ("cost_alu", 1_000_000_000_000), ("hop_latency", 9223372036854775807),
    ("fifo_depth", 100_000), ("sram_bytes", 2147483648), ("chips_x", 1000),
    ("cols", 99999999999999999999), ("clock_hz", 1e20),
])
def test_out_of_range_values_are_refused_with_the_range(key, value):
    with pytest.raises(MachineError, match=f"'{key}' must be in .* got"):
        load_machine("d1", overrides={key: value})


def test_mesh_option_is_bounded():
    with pytest.raises(MachineError, match="must be in 1 .. 1,024"):
        load_machine(mesh="99999999999999999999x1")


def test_a_file_named_like_a_shipped_machine_does_not_replace_it(tmp_path, monkeypatch):
    # a script called d1 in the working directory is not the default machine's description
    (tmp_path / "d1").write_text("#!/bin/sh\nexec python -m d1 \"$@\"\n")
    (tmp_path / "m4x4").write_text("not toml")
    monkeypatch.chdir(tmp_path)
    assert load_machine().n_live == 354
    assert load_machine("d1").n_live == 354
    assert load_machine("m4x4").n_live == 16
    with pytest.raises(MachineError, match="invalid TOML"):
        load_machine("./m4x4")      # a path is the file


@pytest.mark.parametrize("kw", [{"mesh": 44}, {"mesh": (4, 4)}, {"chips": 2}, {"chips": (2,)},
                                {"chips": ("2", "2")}])
def test_load_machine_says_what_mesh_and_chips_take(kw):
    # mesh=44 was an AttributeError ('int' object has no attribute 'lower')
    with pytest.raises(MachineError, match="is a string such as"):
        load_machine(**kw)
