from typing import Literal, Optional, Sequence

import pytest
from torch import nn

from framework.errors import ConfigError
from framework.registry import Registry, Spec, knobs

TOYS = Registry("TOYS", "test components")
PARTS = Registry("PARTS", "test sub-components")


@PARTS.register()
class Wheel(nn.Module):
    def __init__(self, size: int, *, spokes: int = 12, material: Literal["steel", "carbon"] = "steel"):
        super().__init__()
        self.size, self.spokes, self.material = size, spokes, material


@TOYS.register("Bike")
class Bicycle(nn.Module):
    def __init__(
        self,
        *,
        wheel: Spec[PARTS] = "Wheel",
        bell: Optional[Spec[PARTS]] = None,
        gears: Sequence[int] = (1, 2, 3),
        rider: str,
    ):
        super().__init__()
        self.wheel = PARTS.build(wheel, size=26)
        self.bell = None if bell is None else PARTS.build(bell, size=1)
        self.gears, self.rider = list(gears), rider


def test_register_by_decorator_and_name():
    assert TOYS.names() == ["Bike"]
    assert TOYS.get("Bike") is Bicycle
    assert "Wheel" in PARTS.names()


def test_build_uses_signature_defaults_and_runtime_args():
    bike = TOYS.build({"name": "Bike", "rider": "ada"})
    assert bike.gears == [1, 2, 3] and bike.rider == "ada"
    assert bike.wheel.size == 26 and bike.wheel.spokes == 12 and bike.bell is None


def test_build_nested_spec_as_name_or_mapping():
    bike = TOYS.build({"name": "Bike", "rider": "x", "wheel": {"name": "Wheel", "spokes": 32}, "bell": "Wheel"})
    assert bike.wheel.spokes == 32 and bike.bell.size == 1


def test_unknown_name_suggests_closest():
    with pytest.raises(ConfigError, match=r"TOYS has no component named 'Bkie'.*Did you mean 'Bike'\?"):
        TOYS.build({"name": "Bkie"}, path="model")


def test_unknown_key_names_path_and_suggests():
    with pytest.raises(ConfigError, match=r"config path 'toys\.ridr'.*Did you mean 'rider'\?"):
        TOYS.build({"name": "Bike", "ridr": "x"})


def test_wrong_type_names_path():
    with pytest.raises(ConfigError, match=r"config path 'm\.gears.*'"):
        TOYS.build({"name": "Bike", "rider": "x", "gears": ["a"]}, path="m")


def test_missing_required_value():
    with pytest.raises(ConfigError, match=r"config path 'toys\.rider': required value of Bike is missing"):
        TOYS.build({"name": "Bike"})


def test_nested_error_reports_full_path():
    with pytest.raises(ConfigError, match=r"'m\.wheel\.material'.*Did you mean 'carbon'"):
        TOYS.build({"name": "Bike", "rider": "x", "wheel": {"name": "Wheel", "material": "carbn"}}, path="m")


def test_already_built_object_passes_through():
    wheel = Wheel(3)
    assert PARTS.build(wheel) is wheel


def test_runtime_argument_typo_is_a_programming_error():
    with pytest.raises(TypeError, match="runtime argument"):
        PARTS.build("Wheel", size=1, colour="red")


def test_knobs_are_keyword_only_parameters():
    assert [k.name for k in knobs(Wheel)] == ["spokes", "material"]
    ks = {k.name: k for k in knobs(Bicycle)}
    assert ks["wheel"].registry is PARTS and not ks["wheel"].optional
    assert ks["bell"].registry is PARTS and ks["bell"].optional
    assert ks["rider"].required


def test_malformed_components_fail_at_registration():
    with pytest.raises(TypeError, match="needs a type annotation"):

        @TOYS.register()
        class NoAnnotation:
            def __init__(self, *, x=1):
                pass

    with pytest.raises(TypeError, match="forward knobs to a base class"):

        @TOYS.register()
        class Kwargs:
            def __init__(self, **kw: int):
                pass


def test_duplicate_name_is_rejected():
    with pytest.raises(KeyError, match="already registered"):

        @TOYS.register("Bike")
        class Other:
            def __init__(self, *, a: int = 1):
                pass


class _Rim(Wheel):
    """Adds one knob and forwards the rest: inherits Wheel's knobs."""

    def __init__(self, size: int, *, depth: float = 2.0, spokes: int = 24, **kwargs):
        super().__init__(size, spokes=spokes, **kwargs)
        self.depth = depth


class _DeepRim(_Rim):
    def __init__(self, size: int, *, valve: str = "presta", **kwargs):
        super().__init__(size, **kwargs)
        self.valve = valve


def test_a_subclass_forwarding_kwargs_inherits_its_base_knobs():
    assert [k.name for k in knobs(_Rim)] == ["depth", "spokes", "material"]  # its own first, then the base's
    assert [k.default for k in knobs(_Rim)][:2] == [2.0, 24]  # its own default wins on a clash
    assert [k.name for k in knobs(_DeepRim)] == ["valve", "depth", "spokes", "material"]
    parts = Registry("PARTS_INHERIT")
    parts.register(_DeepRim)
    rim = parts.build({"name": "_DeepRim", "material": "carbon", "depth": 3.5}, size=20)
    assert (rim.material, rim.depth, rim.spokes, rim.valve, rim.size) == ("carbon", 3.5, 24, "presta", 20)
    with pytest.raises(ConfigError, match=r"no knob 'materal'.*Did you mean 'material'"):
        parts.build({"name": "_DeepRim", "materal": "carbon"}, size=20)
    with pytest.raises(ConfigError, match=r"'wood' is not one of \['steel', 'carbon'\]"):
        parts.build({"name": "_DeepRim", "material": "wood"}, size=20)


def test_kwargs_without_a_base_to_forward_to_is_refused():
    def make(*, a: int = 1, **kwargs):
        return a

    class Loose(nn.Module):
        def __init__(self, *, b: int = 2, **kwargs):
            super().__init__(**kwargs)

    for obj in (make, Loose):
        with pytest.raises(TypeError, match="forward knobs to a base class"):
            knobs(obj)
    with pytest.raises(TypeError, match=r"no \*args"):
        knobs(lambda *args, x: 0)


def test_each_node_of_a_tree_is_resolved_once_per_build(monkeypatch):
    import framework.config.schema as schema
    import framework.registry as registry_module

    calls = []
    real = schema.resolve_knobs
    counting = lambda registry, spec, *, path: calls.append(path) or real(registry, spec, path=path)  # noqa: E731
    monkeypatch.setattr(schema, "resolve_knobs", counting)  # what validate calls
    monkeypatch.setattr(registry_module, "resolve_knobs", counting)  # what a nested build falls back to
    bike = TOYS.build({"name": "Bike", "rider": "x", "wheel": {"name": "Wheel", "spokes": 32}, "bell": "Wheel"}, path="toy")
    assert bike.wheel.spokes == 32 and bike.bell.size == 1
    assert sorted(calls) == ["toy", "toy.bell", "toy.wheel"]  # validation resolved them; the builds reused that


def test_a_spec_a_parent_makes_up_is_still_checked():
    @TOYS.register()
    class Tandem(nn.Module):
        def __init__(self, *, material: str = "steel"):
            super().__init__()
            self.wheel = PARTS.build({"name": "Wheel", "material": material}, path="tandem.wheel", size=20)

    try:
        assert TOYS.build({"name": "Tandem", "material": "carbon"}).wheel.material == "carbon"
        with pytest.raises(ConfigError, match=r"config path 'tandem\.wheel\.material': 'wood' is not one of"):
            TOYS.build({"name": "Tandem", "material": "wood"})
    finally:
        TOYS._obj_map.pop("Tandem")


def test_a_child_spec_edited_in_place_by_its_parent_is_resolved_again():
    @TOYS.register()
    class Unicycle(nn.Module):
        def __init__(self, *, wheel: Spec[PARTS] = "Wheel"):
            super().__init__()
            if isinstance(wheel, dict):
                wheel["spokes"] = 40  # after the outer validation saw 32
            self.wheel = PARTS.build(wheel, size=20)

    try:
        assert TOYS.build({"name": "Unicycle", "wheel": {"name": "Wheel", "spokes": 32}}).wheel.spokes == 40
    finally:
        TOYS._obj_map.pop("Unicycle")


# ---------------------------------------------------------------------- lists of components, sections
TRAINS = Registry("TRAINS", "test components holding a list")


@TRAINS.register("Train")
class Train(nn.Module):
    def __init__(self, *, wagons: Sequence[Spec[PARTS]] = ("Wheel", {"name": "Wheel", "spokes": 3}), driver: str = "x"):
        super().__init__()
        self.wagons = nn.ModuleList(PARTS.build(w, size=i) for i, w in enumerate(wagons))


def test_a_list_of_components_is_built_entry_by_entry_in_order():
    from framework.config.signature import knobs as signature_knobs

    (wagons, _) = signature_knobs(Train)
    assert wagons.registry is PARTS and wagons.many and not wagons.optional
    train = TRAINS.build({"name": "Train", "wagons": ["Wheel", {"name": "Wheel", "spokes": 5, "material": "carbon"}]})
    assert [(w.size, w.spokes, w.material) for w in train.wagons] == [(0, 12, "steel"), (1, 5, "carbon")]
    assert [w.spokes for w in TRAINS.build("Train").wagons] == [12, 3]  # the signature default


def test_a_bad_entry_of_a_list_names_its_index():
    with pytest.raises(ConfigError, match=r"trains\.wagons\.1\.spoke'.*Did you mean 'spokes'"):
        TRAINS.build({"name": "Train", "wagons": ["Wheel", {"name": "Wheel", "spoke": 5}]}, path="trains")
    with pytest.raises(ConfigError, match=r"trains\.wagons\.0\.name.*Did you mean 'Wheel'"):
        TRAINS.build({"name": "Train", "wagons": ["Wheell"]}, path="trains")
    with pytest.raises(ConfigError, match=r"trains\.wagons': expected a list of PARTS components"):
        TRAINS.build({"name": "Train", "wagons": "Wheel"}, path="trains")


def test_the_schema_of_a_list_is_a_plain_list_with_the_signature_default():
    from omegaconf import OmegaConf

    from framework.config.schema import schema_for

    cfg = OmegaConf.structured(schema_for(Train, "Train"))
    assert OmegaConf.to_container(cfg.wagons) == ["Wheel", {"name": "Wheel", "spokes": 3}]
    assert "defaults" not in cfg  # no config group selects a list


SECTION_PARTS = Registry("SECTION_PARTS", "test parts a section holds", group="section_part")
SECTION_PARTS.register(Wheel)


def _section(*, part: Spec[SECTION_PARTS] = "Wheel", parts: Sequence[Spec[SECTION_PARTS]] = (), level: int = 1):
    """A config section holding a component and a list of them."""


def test_a_section_selects_its_component_from_the_registrys_own_group_and_validates_its_lists():
    from omegaconf import OmegaConf

    from framework.config.schema import schema_for, section_consumer, validate_section

    schema = schema_for(_section)
    assert section_consumer(schema) is _section and section_consumer(schema_for(Wheel, "Wheel")) is None
    # Placed anywhere (- _schema@a.b: ...), the section's component comes from group section_part, under it.
    assert {"/section_part@part": "Wheel"} in schema().defaults
    node = OmegaConf.merge(OmegaConf.structured(schema), {"part": {"name": "Wheel"}, "parts": ["Wheel", {"name": "Whel"}]})
    with pytest.raises(ConfigError, match=r"a\.b\.parts\.1\.name.*Did you mean 'Wheel'"):
        validate_section(node, _section, path="a.b")
    node.parts = [{"name": "Wheel", "material": "wood"}]
    with pytest.raises(ConfigError, match=r"a\.b\.parts\.0\.material': 'wood' is not one of \['steel', 'carbon'\]"):
        validate_section(node, _section, path="a.b")
    node.parts = []
    node.part = {"name": "Wheel", "spoke": 1}
    with pytest.raises(ConfigError, match=r"a\.b\.part\.spoke'.*Did you mean 'spokes'"):
        validate_section(node, _section, path="a.b")
