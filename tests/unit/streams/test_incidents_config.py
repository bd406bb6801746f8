import pytest

from dnsflow.bus.memory import MemoryBus
from dnsflow.settings import ConfigError, Settings
from dnsflow.streams.config import IncidentConfig
from dnsflow.streams.incidents import Detection, Incidents
from dnsflow.streams.service import build

S = 1_000_000


def det(ts, score, domain="", client="10.0.0.1"):
    return Detection(ts=ts, kind="dga", tenant="shop", client_ip=client, domain=domain,
                     score=score, key=("dga", "shop", client))


def test_one_incident_is_one_record_plus_meaningful_updates():
    out = []
    inc = Incidents(IncidentConfig(idle_s=600, min_update_s=60, score_step=0.1), out.append)
    inc.report(det(0, 0.55))                 # new: medium
    inc.report(det(1 * S, 0.58))             # same severity, small change: suppressed
    inc.report(det(2 * S, 0.85))             # severity rises: update
    inc.report(det(3 * S, 0.86, "c2.example"))  # a named domain appears: update
    inc.report(det(4 * S, 0.86, "c2.example"))  # nothing new: suppressed
    inc.report(det(70 * S, 0.86, "c2.example"))  # a minute later: periodic update
    assert [a["severity"] for a in out] == ["medium", "high", "high", "high"]
    assert [a["evidence"]["update"] for a in out] == [0, 1, 2, 3]
    assert len({a["evidence"]["incident"] for a in out}) == 1
    assert out[-1]["evidence"]["detections"] == 6 and inc.suppressed == 2
    inc.expire(1000 * S)  # quiet for longer than idle_s: the incident ends
    inc.report(det(1001 * S, 0.55))
    assert out[-1]["evidence"]["update"] == 0
    assert out[-1]["evidence"]["incident"] != out[0]["evidence"]["incident"]


@pytest.mark.parametrize("streams, field", [
    ({"windows": [-10]}, "streams.windows"),
    ({"detectors": {"dga": {"nx_min": 0}}}, "streams.detectors.dga.nx_min"),
    ({"auto_response": {"tenants": {"shop": ["phishing"]}}}, "streams.auto_response.tenants"),
    ({"windowz": [10]}, "streams.windowz"),
])
def test_bad_streams_settings_name_the_field(streams, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        build(Settings(streams=streams), MemoryBus())


def test_unusable_alert_rule_file_is_a_config_error(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - id: x\n    match: {kind: [dga], severity: high}\n")
    with pytest.raises(ConfigError, match=r"rules\.0\.match\.severity"):
        build(Settings(streams={"alert_rules": str(rules)}), MemoryBus())
