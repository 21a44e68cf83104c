"""configs/reader.py: YAML files into pydantic models, errors naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from configs.reader import ConfigFileError, read_yaml_mapping, validate_config


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")
    port: int = Field(ge=1, le=65535)


class Root(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    inner: Inner


@pytest.mark.parametrize(("text", "expected"), [
    ("name: a\ninner: {port: 1}\n", {"name": "a", "inner": {"port": 1}}),
    ("", {}),  # an empty file is an empty mapping
    ("# only a comment\n", {}),
])
def test_a_mapping_is_read(tmp_path: Path, text: str, expected: dict) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    assert read_yaml_mapping(path) == expected


@pytest.mark.parametrize(("text", "after_the_path"), [
    ("- a\n- b\n", ": expected a mapping at the top level, got list"),
    ("just text\n", ": expected a mapping at the top level, got str"),
    ("name: a\ninner: {port: 1\n", " (line 3, column 1): invalid YAML: "),
    ("name: [a\n", " (line 2, column 1): invalid YAML: "),
])
def test_a_file_that_is_not_a_mapping_names_the_file_and_line(tmp_path: Path, text: str,
                                                               after_the_path: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError) as info:
        read_yaml_mapping(path)
    assert str(info.value).startswith(f"{path}{after_the_path}")


def test_an_unreadable_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"nope\.yaml: cannot read config: No such file"):
        read_yaml_mapping(tmp_path / "nope.yaml")


@pytest.mark.parametrize(("data", "message"), [
    ({"name": "a", "inner": {"port": 0}}, "site.yaml: inner.port: Input should be greater "
                                          "than or equal to 1"),
    ({"name": "a", "inner": {"port": 1, "hots": "x"}},
     "site.yaml: inner.hots: Extra inputs are not permitted"),
    ({"inner": {}}, "site.yaml: name: Field required; inner.port: Field required"),
])
def test_validation_errors_name_every_field_path(data: dict, message: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        validate_config(Root, data, "site.yaml")
    assert str(info.value) == message


def test_a_valid_mapping_becomes_the_model() -> None:
    assert validate_config(Root, {"name": "a", "inner": {"port": 8}}, "x") == \
        Root(name="a", inner=Inner(port=8))


def test_a_config_file_error_is_a_value_error() -> None:
    # process boundaries catch ValueError from constructors; a bad file is one of them
    assert issubclass(ConfigFileError, ValueError)
