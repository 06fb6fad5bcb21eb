"""Dataclasses from mappings: typed fields, nested sections, a field that builds itself, and
overrides, each mistake a UserError that names the key."""

from dataclasses import dataclass, field

import pytest

from mixerflow.core import schema
from mixerflow.core.errors import UserError


@dataclass
class Inner:
    count: int = 1
    rate: float = 0.5
    name: str | None = None


@dataclass
class Picked:
    """Built by its own ``from_mapping``, as the model section is."""

    value: str = "default"

    @classmethod
    def from_mapping(cls, values, prefix):
        return cls(value=f"{prefix}{values['value']}")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    picked: Picked = field(default_factory=Picked)
    flag: bool = False


def test_sections_nest_and_a_field_may_build_itself():
    built = schema.build(Outer, {"inner": {"count": 3, "rate": "1e-3"}, "picked": {"value": "x"},
                                 "flag": True}, "")
    assert built == Outer(Inner(3, 0.001, None), Picked("picked.x"), True)


@pytest.mark.parametrize("tree, message", [
    ({"inner": {"count": 1.5}}, "'inner.count' must be an integer, got 1.5"),
    ({"inner": {"count": True}}, "'inner.count' must be an integer, got True"),
    ({"inner": {"rate": "fast"}}, "'inner.rate' must be a number"),
    ({"inner": {"rate": float("inf")}}, "'inner.rate' must be a finite number"),
    ({"inner": {"name": 3}}, "'inner.name' must be a string"),
    ({"flag": "yes"}, "'flag' must be true or false"),
    ({"inner": {"size": 1}}, "unknown config key 'inner.size'"),
    ({"inner": [1]}, "config section 'inner' must be a mapping"),
])
def test_a_bad_value_names_its_key(tree, message):
    with pytest.raises(UserError, match=message.replace(".", r"\.").replace("(", r"\(")):
        schema.build(Outer, tree, "")


def test_overrides_nest_and_read_their_values_as_yaml():
    tree = {"inner": {"count": 1}}
    for override in ("inner.count=4", "inner.name=null", "new.deep.key=[1, 2]", "flag="):
        schema.apply_override(tree, override)
    assert tree == {"inner": {"count": 4, "name": None}, "new": {"deep": {"key": [1, 2]}},
                    "flag": ""}
    with pytest.raises(UserError, match="'inner.count.x' is not of the form|is not a section"):
        schema.apply_override(tree, "inner.count.x=1")
    with pytest.raises(UserError, match="is not of the form key.sub=value"):
        schema.apply_override(tree, "=1")
