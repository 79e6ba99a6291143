"""YAML loading keeps positions, refuses duplicate keys and YAML 1.1 surprises."""
import pytest

from bootgen.errors import InputError
from bootgen.source import format_path, load_yaml_text


def test_positions_of_keys_and_values():
    doc = load_yaml_text("a: 1\nb:\n  - c: x\n", "f.yaml")
    assert doc.data == {"a": 1, "b": [{"c": "x"}]}
    assert str(doc.locate(("b", 0, "c"))) == "f.yaml:3:8"
    assert str(doc.locate(("b", 0, "c"), key=True)) == "f.yaml:3:5"
    assert str(doc.locate(("b", 0, "missing"))) == "f.yaml:3:5"  # nearest ancestor


def test_duplicate_key_names_both_lines():
    with pytest.raises(InputError) as err:
        load_yaml_text("hostname: a\nx: 1\nhostname: b\n", "n.yaml")
    assert str(err.value) == ("n.yaml:3:1: error at $.hostname: duplicate key 'hostname' (first defined on line 1)\n"
                              "  hint: YAML keeps only the last value; remove one of them")


def test_mac_is_not_a_base60_number():
    assert load_yaml_text("mac: 52:54:00:12:34:56\n", "n").data == {"mac": "52:54:00:12:34:56"}


def test_octal_mode_and_plain_scalars():
    data = load_yaml_text("mode: 0644\nflag: true\nnone:\ndate: 2024-01-02\n", "n").data
    assert data == {"mode": 0o644, "flag": True, "none": None, "date": "2024-01-02"}


def test_syntax_error_has_position():
    with pytest.raises(InputError) as err:
        load_yaml_text("a: [1, 2\nb: 3\n", "bad.yaml")
    assert str(err.value).startswith("bad.yaml:2:2: error: invalid YAML")


def test_unknown_tag_is_a_problem():
    with pytest.raises(InputError) as err:
        load_yaml_text("a: !vault xyz\n", "t.yaml")
    assert "t.yaml:1:4: error at $.a: could not determine a constructor for the tag '!vault'" in str(err.value)


def test_format_path():
    assert format_path(("interfaces", 0, "mac")) == "$.interfaces[0].mac"
