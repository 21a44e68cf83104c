"""Config: defaults documented in configs/default.yaml, merging, errors with paths."""

from __future__ import annotations

import pytest

from geo.admin import Level
from gridwatch.config import ConfigError, GridWatchConfig, deep_merge, load_config
from stream.policy import Mode


def test_default_config_has_a_policy_for_every_builtin_kind():
    config = load_config()
    assert set(config.kinds) == {"smoke", "door_forced", "door_held_open",
                                 "helmetless_rider", "wrong_way_ebike"}
    assert config.kinds["smoke"].mode is Mode.INCIDENT
    assert config.kinds["helmetless_rider"].mode is Mode.HOTSPOT
    assert config.policies.for_kind("illegal_parking").auto_dispatch is False


def test_a_user_file_is_merged_over_the_defaults(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text("kinds:\n  smoke:\n    window_s: 120\n    level: district\n")
    config = load_config(path)
    assert config.kinds["smoke"].window_s == 120
    assert config.kinds["smoke"].level is Level.DISTRICT
    assert config.kinds["smoke"].department == "fire_rescue"  # kept from the default
    assert "door_forced" in config.kinds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kinds:\n  smoke:\n    priority: P9\n", "kinds.smoke.priority: Input should be"),
        ("kinds:\n  smoke:\n    mode: sometimes\n", "kinds.smoke.mode: Input should be"),
        ("stream:\n  lateness_s: -1\n", "stream.lateness_s: Input should be greater"),
        ("streem: {}\n", "streem: Extra inputs are not permitted"),
        ("- a\n- b\n", "expected a mapping at the top level, got list"),
        ("kinds: {smoke: {window_s: 1\n", "invalid YAML"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == load_config()


def test_deep_merge_replaces_lists_and_merges_mappings():
    assert deep_merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}}) == \
        {"a": {"b": 1, "c": [2]}, "d": 1}


def test_without_any_file_every_kind_goes_to_operator_review():
    """The model's own defaults (no default.yaml) are a valid config that knows no kind:
    each one gets ``default_kind``, which waits for an operator at the command centre."""
    config = GridWatchConfig()
    assert config.kinds == {} and not config.policies.is_known("smoke")
    policy = config.policies.for_kind("smoke")
    assert policy == config.default_kind
    assert (policy.auto_dispatch, policy.department) == (False, "command_centre")
    assert "command_centre" in config.ticketing.departments


def test_the_default_is_read_from_package_data():
    import configs
    from gridwatch.config import default_config_file

    default = default_config_file()
    assert default.name == "default.yaml" and default.is_file()
    assert str(default).startswith(str(configs.__path__[0]))


def test_a_missing_default_is_an_error_not_an_empty_config(monkeypatch):
    # an installed package without its default.yaml used to fall back to {} silently:
    # every kind lost its policy (issue: 18 review tickets instead of 9)
    import gridwatch.config as config_module

    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_NAME", "no-such-default.yaml")
    with pytest.raises(ConfigError, match="no-such-default.yaml: cannot read config"):
        load_config()


def test_a_missing_default_package_is_an_error(monkeypatch):
    import gridwatch.config as config_module

    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PACKAGE", "no_such_configs_package")
    with pytest.raises(ConfigError, match="default configuration .* is not installed"):
        load_config()
