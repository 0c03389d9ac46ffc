"""valohai.yaml is valid and agrees with train.py's valohai.prepare() call."""

from __future__ import annotations

import valohai_yaml
import yaml
from conftest import ROOT
from valohai.internals.yaml import parse_config_from_source

YAML_PATH = ROOT / "valohai.yaml"


def load_step() -> valohai_yaml.objs.Step:
    with YAML_PATH.open() as file:
        return valohai_yaml.parse(file).steps["train"]


def test_valohai_yaml_validates() -> None:
    with YAML_PATH.open() as file:
        assert valohai_yaml.validate(yaml.safe_load(file)) == []
    with YAML_PATH.open() as file:
        assert list(valohai_yaml.parse(file).lint().messages) == []


def test_step_parameters_agree_with_prepare() -> None:
    derived = parse_config_from_source(str(ROOT / "train.py"), str(YAML_PATH)).steps["train"]
    declared = load_step()

    def signature(step: valohai_yaml.objs.Step) -> dict[str, tuple[str, object]]:
        return {name: (parameter.type, parameter.default) for name, parameter in step.parameters.items()}

    assert signature(declared) == signature(derived)
    assert signature(declared) == {
        "retries": ("integer", 3),
        "delay": ("integer", 60),
        "failure_rate": ("float", 0.5),
        "failure_type": ("string", "connection"),
    }
    assert all(parameter.description for parameter in declared.parameters.values())


def test_step_runs_train_py_with_its_parameters_after_installing_requirements() -> None:
    step = load_step()
    command = " && ".join(step.command)
    assert "pip install" in command and "-r requirements.txt" in command
    assert command.endswith("python train.py {parameters}")
    assert step.image.startswith("python:3.") and step.image.endswith("-slim")


def test_token_variable_is_declared_with_a_description() -> None:
    variable = load_step().environment_variables["VH_API_TOKEN"]
    assert variable.description and "secret" in variable.description


def test_the_step_allows_no_delay_the_retry_policy_would_refuse() -> None:
    import retry

    delay = load_step().parameters["delay"]
    assert delay.max == retry.Policy().max_delay  # a larger delay would fail at once on Valohai
