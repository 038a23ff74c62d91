"""A security group file is YAML (JSON included); a bad one is a clear error."""

from __future__ import annotations

import pytest

from steelcup.cli.commands.secgroup import load_document
from steelcup.errors import InvalidArgument


def test_yaml_and_json_group_files() -> None:
    yaml_doc = ("description: web\nrules:\n"
                "  - {direction: ingress, protocol: tcp, ports: \"80\", remote: 10.0.0.0/8}\n")
    assert load_document(yaml_doc, "web.yaml") == {
        "description": "web",
        "rules": [{"direction": "ingress", "protocol": "tcp", "ports": "80",
                   "remote": "10.0.0.0/8"}]}
    assert load_document('{"rules": []}', "web.json") == {"rules": []}
    with pytest.raises(InvalidArgument, match="web.yaml: not valid YAML"):
        load_document("rules: [unclosed", "web.yaml")
