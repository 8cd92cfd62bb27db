"""medsynth/registry.py: the version-tag schema read back as promote wrote it."""

from types import SimpleNamespace

import pytest

from medsynth import registry as reg


def test_version_metrics_and_protocol_read_the_tags_promote_writes():
    mv = SimpleNamespace(tags={f"{reg.METRIC_PREFIX}fid_domain": "12.5", f"{reg.METRIC_PREFIX}unstable": "False",
                               f"{reg.METRIC_PREFIX}note": "n/a", reg.EVAL_DATA_HASH: "abc", reg.EVAL_MODEL_URI: "",
                               reg.GATE_PASSED: "true"})
    assert reg.version_metrics(mv) == {"fid_domain": 12.5, "unstable": False, "note": "n/a"}
    assert reg.version_protocol(mv) == {"data_hash": "abc"}
    assert reg.version_metrics(SimpleNamespace(tags=None)) == {}


def test_aliases_by_version_champion_first():
    class Client:
        def get_model_version_by_alias(self, name, alias):
            if alias == reg.CHALLENGER:
                raise OSError("store down")
            return SimpleNamespace(version=3)

    assert reg.aliases_by_version(Client(), "m", any_error=True) == {"3": [reg.CHAMPION]}
    with pytest.raises(OSError):  # a broken store must not read as "no champion yet" for the gate
        reg.aliases_by_version(Client(), "m")
