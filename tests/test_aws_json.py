"""aws/json/ (the X-Ray sampling rule and group) and aws/bin/xray-setup, which applies them.

The JSON files are checked against the X-Ray API model that botocore ships, the same one the AWS
CLI validates `--cli-input-json` with. The script runs against a fake `aws` first on PATH that
records each call, so both its create path and its update path are exercised offline.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.session
import pytest
import yaml
from botocore.validate import ParamValidator

REPO = Path(__file__).resolve().parent.parent
RULE_FILE = REPO / "aws" / "json" / "xray.json"
GROUP_FILE = REPO / "aws" / "json" / "xray-group.json"
SETUP_SCRIPT = REPO / "aws" / "bin" / "xray-setup"

EXPECTED_RULE = {
    "RuleName": "Cruddur",
    "ResourceARN": "*",
    "Priority": 9000,
    "FixedRate": 0.1,
    "ReservoirSize": 5,
    "ServiceName": "backend-flask",
    "ServiceType": "*",
    "Host": "*",
    "HTTPMethod": "*",
    "URLPath": "*",
    "Version": 1,
}
#: What CreateSamplingRule requires in SamplingRule (RuleName names it; RuleARN is the alternative).
REQUIRED_RULE_FIELDS = frozenset(EXPECTED_RULE)
EXPECTED_GROUP = {"GroupName": "Cruddur", "FilterExpression": 'service("backend-flask")'}


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def rule() -> dict[str, Any]:
    return load(RULE_FILE)["SamplingRule"]


def xray_validation_errors(operation: str, params: dict[str, Any]) -> str:
    """What the AWS CLI would reject in these parameters of an X-Ray operation ('' when nothing)."""
    model = botocore.session.get_session().get_service_model("xray")
    report = ParamValidator().validate(params, model.operation_model(operation).input_shape)
    return report.generate_report()


# --- aws/json ----------------------------------------------------------------------------------


def test_sampling_rule_file_is_create_sampling_rule_input():
    document = load(RULE_FILE)
    assert set(document) == {"SamplingRule"}
    assert xray_validation_errors("CreateSamplingRule", document) == ""


def test_sampling_rule_values():
    assert rule() == EXPECTED_RULE


def test_sampling_rule_has_every_required_field_and_no_other():
    model = botocore.session.get_session().get_service_model("xray")
    required = set(model.shape_for("SamplingRule").required_members)
    assert required <= REQUIRED_RULE_FIELDS
    assert set(rule()) == REQUIRED_RULE_FIELDS


def test_sampling_rule_types():
    sampling_rule = rule()
    for name in ("Priority", "ReservoirSize", "Version"):
        assert type(sampling_rule[name]) is int, name
    assert 1 <= sampling_rule["Priority"] <= 9999
    assert sampling_rule["ReservoirSize"] >= 0
    assert sampling_rule["Version"] == 1
    assert isinstance(sampling_rule["FixedRate"], float)
    assert 0 <= sampling_rule["FixedRate"] <= 1
    for name in ("RuleName", "ResourceARN", "ServiceName", "ServiceType", "Host", "HTTPMethod", "URLPath"):
        assert isinstance(sampling_rule[name], str) and sampling_rule[name], name


def test_group_file_is_create_group_input():
    group = load(GROUP_FILE)
    assert group == EXPECTED_GROUP
    assert xray_validation_errors("CreateGroup", group) == ""


def test_rule_group_and_service_name_agree():
    """The rule and the group select the service name the app reports by default in compose."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text(encoding="utf-8"))
    environment = compose["services"]["backend-flask"]["environment"]
    if isinstance(environment, dict):
        service_name = environment["OTEL_SERVICE_NAME"]
    else:
        service_name = next(item for item in environment if item.startswith("OTEL_SERVICE_NAME=")).partition("=")[2]
    assert service_name == "${OTEL_SERVICE_NAME:-backend-flask}"
    assert rule()["ServiceName"] == "backend-flask"
    assert load(GROUP_FILE)["FilterExpression"] == f'service("{rule()["ServiceName"]}")'


# --- aws/bin/xray-setup ------------------------------------------------------------------------


def test_setup_script_is_executable_strict_bash():
    text = SETUP_SCRIPT.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert SETUP_SCRIPT.stat().st_mode & stat.S_IXUSR
    completed = subprocess.run(["bash", "-n", str(SETUP_SCRIPT)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr


def test_setup_script_passes_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    completed = subprocess.run(["shellcheck", str(SETUP_SCRIPT)], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout


FAKE_AWS = """
import json
import os
import sys

args = sys.argv[1:]
with open(os.environ["FAKE_AWS_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps(args) + "\\n")

ARN = "arn:aws:xray:us-east-1:123456789012:"
existing = os.environ.get("FAKE_AWS_EXISTING") == "1"
operation = "".join(word.title() for word in args[1].split("-"))


def fail(code, message):
    sys.stderr.write(f"\\nAn error occurred ({code}) when calling the {operation} operation: {message}\\n")
    sys.exit(254)


if os.environ.get("FAKE_AWS_DENIED") == "1":
    fail("AccessDeniedException", "User is not authorized to perform: xray:" + operation)
if args[:2] == ["xray", "create-sampling-rule"]:
    if existing:
        fail("InvalidRequestException", "RuleName already exists")
    print(ARN + "sampling-rule/Cruddur")
elif args[:2] == ["xray", "get-sampling-rules"]:
    print("Default\\tCruddur" if existing else "Default")
elif args[:2] == ["xray", "update-sampling-rule"]:
    print(ARN + "sampling-rule/Cruddur")
elif args[:2] == ["xray", "create-group"]:
    if existing:
        fail("InvalidRequestException", "Group already exists")
    print(ARN + "group/Cruddur/ABC")
elif args[:2] == ["xray", "get-group"]:
    if not existing:
        fail("InvalidRequestException", "Group not found")
    print("Cruddur")
elif args[:2] == ["xray", "update-group"]:
    print(ARN + "group/Cruddur/ABC")
elif args[:2] == ["sts", "get-caller-identity"]:
    print("arn:aws:iam::123456789012:user/cruddur-dev")
elif args[:2] == ["logs", "put-resource-policy"]:
    print("{}")
elif args[:2] == ["xray", "get-trace-segment-destination"]:
    print(os.environ.get("FAKE_AWS_DESTINATION", "XRay"))
elif args[:2] == ["xray", "update-trace-segment-destination"]:
    print("PENDING")
else:
    fail("InvalidArgument", "the fake does not know " + " ".join(args))
"""


def run_setup(
    tmp_path: Path, *arguments: str, **fake_settings: str
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """Run xray-setup from another folder with the fake `aws` first on PATH; return it and the calls."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake = fake_bin / "aws"
    fake.write_text(f"#!{sys.executable}\n{FAKE_AWS}", encoding="utf-8")
    fake.chmod(0o755)
    log = tmp_path / "aws-calls.jsonl"
    log.touch()
    environment = {
        "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "AWS_REGION": "us-east-1",
        "FAKE_AWS_LOG": str(log),
        **fake_settings,
    }
    completed = subprocess.run(
        [str(SETUP_SCRIPT), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env=environment,
    )
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return completed, calls


def option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def input_json(call: list[str]) -> dict[str, Any]:
    """The `--cli-input-json` of a call, read from its file:// path or taken as inline JSON."""
    value = option(call, "--cli-input-json")
    if value.startswith("file://"):
        return load(Path(value.removeprefix("file://")))
    return json.loads(value)


def test_setup_creates_the_rule_and_the_group(tmp_path):
    completed, calls = run_setup(tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert [call[:2] for call in calls] == [["xray", "create-sampling-rule"], ["xray", "create-group"]]
    create_rule, create_group = calls
    assert input_json(create_rule) == load(RULE_FILE)
    assert input_json(create_group) == load(GROUP_FILE)
    assert "created sampling rule Cruddur" in completed.stdout
    assert "created group Cruddur" in completed.stdout


def test_setup_updates_what_already_exists(tmp_path):
    completed, calls = run_setup(tmp_path, FAKE_AWS_EXISTING="1")
    assert completed.returncode == 0, completed.stderr
    assert [call[1] for call in calls] == [
        "create-sampling-rule",
        "get-sampling-rules",
        "update-sampling-rule",
        "create-group",
        "get-group",
        "update-group",
    ]
    update_rule = input_json(calls[2])
    expected = {key: value for key, value in EXPECTED_RULE.items() if key != "Version"}
    assert update_rule == {"SamplingRuleUpdate": expected}
    assert xray_validation_errors("UpdateSamplingRule", update_rule) == ""
    assert option(calls[4], "--group-name") == "Cruddur"
    update_group = calls[5]
    assert option(update_group, "--group-name") == "Cruddur"
    assert option(update_group, "--filter-expression") == 'service("backend-flask")'
    assert "updated sampling rule Cruddur" in completed.stdout
    assert "updated group Cruddur" in completed.stdout


def test_setup_reports_other_errors_and_updates_nothing(tmp_path):
    completed, calls = run_setup(tmp_path, FAKE_AWS_DENIED="1")
    assert completed.returncode != 0
    assert [call[1] for call in calls] == ["create-sampling-rule", "get-sampling-rules"]
    assert "AccessDeniedException" in completed.stderr
    assert "could not create sampling rule Cruddur" in completed.stderr


# --- aws/bin/xray-setup --transaction-search -------------------------------------------------------

POLICY_FILE = REPO / "aws" / "json" / "transaction-search-policy.json"
SPANS_GROUPS = ("aws/spans", "/aws/application-signals/data")


def logs_validation_errors(operation: str, params: dict[str, Any]) -> str:
    model = botocore.session.get_session().get_service_model("logs")
    return ParamValidator().validate(params, model.operation_model(operation).input_shape).generate_report()


def test_transaction_search_policy_lets_only_xray_write_the_span_log_groups():
    [statement] = load(POLICY_FILE)["Statement"]
    assert statement["Principal"] == {"Service": "xray.amazonaws.com"}
    assert statement["Action"] == "logs:PutLogEvents"
    assert statement["Resource"] == [
        f"arn:${{Partition}}:logs:${{Region}}:${{AccountId}}:log-group:{group}:*" for group in SPANS_GROUPS
    ]
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "${AccountId}"}


def test_transaction_search_is_turned_on_for_this_account_and_region(tmp_path):
    completed, calls = run_setup(tmp_path, "--transaction-search")
    assert completed.returncode == 0, completed.stderr
    assert [call[:2] for call in calls][2:] == [
        ["sts", "get-caller-identity"],
        ["logs", "put-resource-policy"],
        ["xray", "get-trace-segment-destination"],
        ["xray", "update-trace-segment-destination"],
    ]
    put_policy = calls[3]
    params = {
        "policyName": option(put_policy, "--policy-name"),
        "policyDocument": option(put_policy, "--policy-document"),
    }
    assert logs_validation_errors("PutResourcePolicy", params) == ""
    [statement] = json.loads(params["policyDocument"])["Statement"]
    assert statement["Resource"] == [
        f"arn:aws:logs:us-east-1:123456789012:log-group:{group}:*" for group in SPANS_GROUPS
    ]
    assert statement["Condition"] == {
        "ArnLike": {"aws:SourceArn": "arn:aws:xray:us-east-1:123456789012:*"},
        "StringEquals": {"aws:SourceAccount": "123456789012"},
    }
    update = calls[5]
    assert option(update, "--destination") == "CloudWatchLogs"
    assert xray_validation_errors("UpdateTraceSegmentDestination", {"Destination": "CloudWatchLogs"}) == ""
    assert "turned Transaction Search on in us-east-1 (PENDING)" in completed.stdout


def test_transaction_search_already_on_is_left_as_it_is(tmp_path):
    completed, calls = run_setup(tmp_path, "--transaction-search", FAKE_AWS_DESTINATION="CloudWatchLogs")
    assert completed.returncode == 0, completed.stderr
    assert ["xray", "update-trace-segment-destination"] not in [call[:2] for call in calls]
    assert "Transaction Search is already on in us-east-1" in completed.stdout


def test_without_the_flag_transaction_search_is_not_touched(tmp_path):
    completed, calls = run_setup(tmp_path)
    assert completed.returncode == 0
    assert {call[0] for call in calls} == {"xray"} and len(calls) == 2


def test_an_unknown_argument_is_refused_before_any_call(tmp_path):
    completed, calls = run_setup(tmp_path, "--transaction-serch")
    assert completed.returncode == 2 and "usage: aws/bin/xray-setup [--transaction-search]" in completed.stderr
    assert calls == []
