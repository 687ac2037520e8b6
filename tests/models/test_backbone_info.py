"""What each backbone declares at its registration line, and the registry feature behind it."""

from __future__ import annotations

import dataclasses

import pytest

from xdlm.models import BACKBONES, BackboneInfo, backbone_info
from xdlm.registry import Registry


@pytest.mark.parametrize(
    ("name", "objective", "generates"),
    [("dit", "diffusion", True), ("causal_dit", "autoregressive", False)],
)
def test_builtin_backbones_declare_their_objective(name, objective, generates):
    info = backbone_info(name)
    assert info == BackboneInfo(objective=objective)
    assert info.generates is generates


def test_every_registered_backbone_has_info():
    for name in BACKBONES.available():
        assert isinstance(backbone_info(name), BackboneInfo)


def test_unknown_backbone_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'rwkv'; available: causal_dit, dit"):
        backbone_info("rwkv")


def test_info_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        backbone_info("dit").objective = "autoregressive"  # type: ignore[misc]


def test_unknown_objective_fails_at_the_registration_line():
    backbones = Registry("backbone", info=BackboneInfo)
    with pytest.raises(ValueError, match=r"objective: unknown 'masked'; allowed: diffusion, autor"):
        backbones.register("bert", objective="masked")


def test_registration_must_declare_the_info_fields():
    backbones = Registry("backbone", info=BackboneInfo)
    with pytest.raises(TypeError):
        backbones.register("mamba")  # no objective
    with pytest.raises(TypeError):
        backbones.register("mamba", objectve="diffusion")  # misspelt


def test_registry_without_info_refuses_fields_and_keeps_its_api():
    samplers = Registry("sampler")
    with pytest.raises(TypeError, match=r"sampler 'fast'.*describes no entries.*speed"):
        samplers.register("fast", speed=2)

    @samplers.register("plain")
    def plain() -> str:
        return "plain"

    assert samplers.get("plain") is plain and "plain" in samplers
    assert samplers.available() == ["plain"] and samplers.info("plain") is None
    with pytest.raises(ValueError, match=r"unknown sampler 'x'; available: plain"):
        samplers.info("x")
    with pytest.raises(ValueError, match="registered twice"):
        samplers.register("plain")(plain)
