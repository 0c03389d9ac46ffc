"""The retry is a faithful copy: the exact create body, and the host it goes to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import responses
from conftest import (
    AUTH,
    CREATED,
    EXECUTION_ID,
    PROJECT_ID,
    FakeClock,
    expect_status_detail,
    expected_payload,
    fail,
    instant,
    load_fixture,
)
from responses import matchers

import retry

KUBERNETES = {"containers": {"workload": {"resources": {"requests": {"cpu": 2, "memory": 4096}}}}}
SMALL = matchers.query_param_matcher({"exclude": "metadata,events"})
IN_AN_EXECUTION = {"VH_JOB_ID": "job-1"}


@pytest.mark.parametrize(
    ("field", "in_detail", "in_payload"),
    [
        (
            "runtime_config",
            {"autorestart": True, "kubernetes": KUBERNETES},
            {"autorestart": True, "kubernetes": KUBERNETES},
        ),
        ("runtime_config", {}, {}),  # an explicit empty value is sent, as the CLI sends it
        ("priority", 5, 5),
        ("priority", 0, 0),
        ("runtime_config_preset", "0193c0de-kube-preset", "0193c0de-kube-preset"),
        ("runtime_config_preset", {"id": "0193c0de-kube-preset", "name": "gpu-large"}, "0193c0de-kube-preset"),
        (
            "environment_variable_groups",
            ["0193e1e1-group-a", {"id": "0193e1e1-group-b"}],
            ["0193e1e1-group-a", "0193e1e1-group-b"],
        ),
        ("time_limit", 0, 0),
    ],
)
def test_each_field_of_the_execution_is_copied_when_it_has_one(field: str, in_detail: Any, in_payload: Any) -> None:
    detail = load_fixture("execution-detail.json")
    detail[field] = in_detail
    expected = expected_payload(["nightly", "retry: 1"], None)
    expected[field] = in_payload
    assert retry.build_retry_payload(detail, 1, parent_id=EXECUTION_ID) == expected


@pytest.mark.parametrize(
    ("field", "in_detail"),
    [
        ("runtime_config", None),
        ("runtime_config", "autorestart"),  # not an object: not guessed at
        ("priority", None),
        ("priority", True),
        ("runtime_config_preset", None),
        ("runtime_config_preset", ""),
        ("environment_variable_groups", []),
        ("environment_variable_groups", None),
        ("time_limit", None),
        ("image", ""),
        ("title", None),
        ("environment", None),
    ],
)
def test_a_field_the_execution_lacks_is_left_out(field: str, in_detail: Any) -> None:
    detail = load_fixture("execution-detail.json")
    detail[field] = in_detail
    expected = expected_payload(["nightly", "retry: 1"], None)
    expected.pop(field, None)
    assert retry.build_retry_payload(detail, 1, parent_id=EXECUTION_ID) == expected
    del detail[field]
    assert retry.build_retry_payload(detail, 1, parent_id=EXECUTION_ID) == expected


def test_the_retry_always_inherits_the_project_variables_and_secrets(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("VH_CONFIG_DIR", str(tmp_path / "nonexistent"))
    detail = {"project": {"id": PROJECT_ID}, "commit": {"identifier": "abc"}, "step": "train"}
    payload = retry.build_retry_payload(detail, 2, parent_id="p")
    assert payload == {
        "project": PROJECT_ID,
        "commit": "abc",
        "step": "train",
        "parameters": {},
        "inputs": {},
        "tags": ["retry: 2"],
        "environment_variables": {"RETRY_PARENT": "p"},
        "inherit_environment_variables": True,
    }


def write_api_json(config_dir: Path, url: str) -> None:
    api = {"set_status_detail": {"url": url, "method": "POST", "headers": {"Authorization": "Signature d1e2f3a4b5c6"}}}
    (config_dir / "api.json").write_text(json.dumps(api))


def expect_relaunch_at(api: responses.RequestsMock, host: str, clock: FakeClock) -> None:
    """The two API calls of a relaunch, at ``host``, with the exact create body."""
    detail_url = f"{host}/api/v0/executions/{EXECUTION_ID}/"
    api.get(detail_url, json=load_fixture("execution-detail.json"), match=[AUTH, SMALL])
    payload = expected_payload(["nightly", "retry: 1"], instant(clock.now_value + 60))
    strict = matchers.json_params_matcher(payload, strict_match=True)
    api.post(f"{host}/api/v0/executions/", json=CREATED, status=201, match=[AUTH, strict])


def test_valohai_host_wins_over_api_json(
    config_dir: Path,
    api: responses.RequestsMock,
    runtime: retry.Runtime,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VALOHAI_HOST", "https://valohai.acme.internal")
    expect_relaunch_at(api, "https://valohai.acme.internal", clock)
    expect_status_detail(api, "ConnectionError: could not connect to db.internal:5432 - retry 1/3 started as #42")

    assert fail(runtime) == retry.EXIT_RETRY_STARTED


def test_without_valohai_host_the_api_is_where_api_json_points(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    signed = "https://valohai.acme.internal:8443/api/v0/executions/x/status-detail/?signature=d1e2f3"
    write_api_json(config_dir, signed)
    expect_relaunch_at(api, "https://valohai.acme.internal:8443", clock)
    api.post(signed, match=[matchers.header_matcher({"Authorization": "Signature d1e2f3a4b5c6"})])

    assert fail(runtime) == retry.EXIT_RETRY_STARTED


def test_without_either_the_api_is_app_valohai_com(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    (config_dir / "api.json").unlink()
    expect_relaunch_at(api, "https://app.valohai.com", clock)

    assert fail(runtime) == retry.EXIT_RETRY_STARTED


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"set_status_detail": {"method": "POST"}}',
        '["a list"]',
        '{"set_status_detail": {"url": "/api/v0/executions/x/status-detail/"}}',  # not an absolute address
        '{"set_status_detail": {"url": 7}}',
    ],
)
def test_an_api_json_without_a_usable_url_is_refused_not_ignored(config_dir: Path, content: str) -> None:
    # Falling back to app.valohai.com would send a self-hosted installation's token there.
    (config_dir / "api.json").write_text(content)
    with pytest.raises(retry.RetryError, match=r"api.json has no usable set_status_detail URL to find the API by"):
        retry.api_host(IN_AN_EXECUTION)


def test_an_api_json_url_on_loopback_is_its_own_origin(config_dir: Path) -> None:
    write_api_json(config_dir, "http://127.0.0.1:8000/x/?s=1")
    assert retry.api_host(IN_AN_EXECUTION) == "http://127.0.0.1:8000"


def test_an_api_json_url_in_plain_http_on_another_host_is_refused(config_dir: Path) -> None:
    write_api_json(config_dir, "http://valohai.acme.internal/api/v0/executions/x/status-detail/")
    with pytest.raises(retry.RetryError, match=r"the status-detail URL in api.json uses plain http"):
        retry.api_host(IN_AN_EXECUTION)


def test_on_a_laptop_a_stray_api_json_never_steers_the_token(config_dir: Path, clean_env: pytest.MonkeyPatch) -> None:
    # A clone, a checkout or an unpacked artifact may carry .valohai/config/api.json: outside an
    # execution it is never read, so the token goes to VALOHAI_HOST or app.valohai.com only.
    write_api_json(config_dir, "https://collector.example.com/api/v0/executions/x/status-detail/")
    assert retry.api_host({}) == "https://app.valohai.com"
    assert retry.api_host({"VALOHAI_HOST": "https://valohai.acme.internal"}) == "https://valohai.acme.internal"
    (config_dir / "api.json").write_text("not json")
    assert retry.api_host({}) == "https://app.valohai.com"  # not even refused: simply not looked at
    with pytest.raises(retry.RetryError, match=r"api\.json has no usable"):  # inside an execution it is
        retry.api_host(IN_AN_EXECUTION)
