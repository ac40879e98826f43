"""Kubernetes' name and label rules, with the API server's messages (k8s.io/apimachinery)."""

from __future__ import annotations

import pytest

from meshwasm.manifests import names


@pytest.mark.parametrize("value", ["a", "my-name", "123-abc", "a.b", "x" * 253])
def test_dns1123_subdomains(value: str) -> None:
    assert names.dns1123_subdomain(value) == ()


@pytest.mark.parametrize("value", ["", "A", "a_b", "-a", "a-", "a/../b", "ä", "a..b", "a\n"])
def test_not_dns1123_subdomains(value: str) -> None:
    (message,) = names.dns1123_subdomain(value)
    assert message.startswith("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric")
    assert message.endswith(
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    )


def test_lengths_count_bytes() -> None:
    assert names.dns1123_subdomain("a" * 254)[0] == "must be no more than 253 bytes"
    assert names.label_value("é" * 32) != ()  # 64 bytes in UTF-8 (and not a valid label anyway)
    assert names.dns1123_label("a" * 64)[0] == "must be no more than 63 bytes"


def test_labels_dots_and_services() -> None:
    assert names.dns1123_label("a.b") == ("must not contain dots",)
    assert names.dns1035_label("1abc")[0].startswith("a DNS-1035 label must consist of")
    assert names.dns1035_label("abc-1") == ()


@pytest.mark.parametrize("key", ["app", "app.kubernetes.io/name", "example.com/My_Name", "a-b.c"])
def test_label_keys(key: str) -> None:
    assert names.label_key(key) == ()


def test_label_key_refusals() -> None:
    assert names.label_key("a/b/c")[0].startswith("a valid label key must consist of alphanumeric")
    assert names.label_key("/x") == ("prefix part must be non-empty",)
    assert names.label_key("Example.com/x")[0].startswith("prefix part a lowercase RFC 1123 subdomain")
    assert names.label_key("x/") == (
        "name part must be non-empty",
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an"
        " alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is"
        " '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
    )


def test_label_values() -> None:
    assert names.label_value("") == ()
    assert names.label_value("My_Value.1") == ()
    assert names.label_value("a b")[0].startswith("a valid label must be an empty string or consist of")


def test_metadata_errors_name_the_field() -> None:
    errors = names.metadata_errors(
        "",
        "Service",
        {"name": "1svc", "namespace": "Bad", "labels": {"ok": "a/b"}, "annotations": {"A/b/c": "x"}},
    )
    assert [e.field for e in errors] == [
        "metadata.name",
        "metadata.namespace",
        "metadata.labels",
        "metadata.annotations",
    ]
    assert str(errors[0]).startswith('metadata.name: Invalid value: "1svc": a DNS-1035 label')
    # Annotation keys are checked case-insensitively, as the API server does.
    assert (
        names.metadata_errors("", "ConfigMap", {"name": "c", "annotations": {"Example.COM/Key": "v"}}) == []
    )


def test_annotations_total_size() -> None:
    big = {"a": "x" * (256 * 1024)}
    (error,) = names.metadata_errors("", "ConfigMap", {"name": "c", "annotations": big})
    assert str(error) == "metadata.annotations: Too long: may not be more than 262144 bytes"
