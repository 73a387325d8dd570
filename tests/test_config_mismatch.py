"""Resuming a workdir with another config: which differences refuse the resume."""

from adaptive_data import checkpoint


def test_a_changed_setting_is_a_difference():
    saved = {"method": "base", "train": {"learning_rate": 1e-3, "steps": 100}}
    current = {"method": "base", "train": {"learning_rate": 3e-3, "steps": 200}}
    # train.steps may grow (harmless); the learning rate changes the result.
    assert checkpoint.config_differences(saved, current) == ["train.learning_rate: 0.001 -> 0.003"]


def test_a_key_added_later_in_its_off_state_is_no_difference():
    saved = {"method": "base", "select": {"k": 8}}
    for off in ([], (), "", None):
        current = {"method": "base", "extra_modules": off, "select": {"k": 8}}
        assert checkpoint.config_differences(saved, current) == []
        assert checkpoint.config_differences(current, saved) == []


def test_a_key_added_later_and_switched_on_is_a_difference():
    saved = {"method": "base"}
    current = {"method": "base", "extra_modules": ["my_project.method"]}
    assert checkpoint.config_differences(saved, current) == [
        "extra_modules: '<absent>' -> ['my_project.method']"
    ]


def test_a_key_added_later_with_its_earlier_behaviour_is_no_difference():
    saved = {"method": "mixing", "mixing": {"generic_weight": 0.9}}
    same = {"method": "mixing", "mixing": {"generic_weight": 0.9, "batch": "separate"}}
    assert checkpoint.config_differences(saved, same) == []
    other = {"method": "mixing", "mixing": {"generic_weight": 0.9, "batch": "mixed"}}
    assert checkpoint.config_differences(saved, other) == ["mixing.batch: '<absent>' -> 'mixed'"]


def test_every_backward_default_is_the_current_default():
    from adaptive_data import config_args

    config = config_args.load_config("configs/default.py", "method=base").to_dict()
    flat = checkpoint._flatten(config)
    for key, value in checkpoint.BACKWARD_DEFAULTS.items():
        assert flat[key] == value, key
