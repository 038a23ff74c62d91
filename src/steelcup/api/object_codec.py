"""Docker's JSON for swarm secrets and configs <-> the services layer: their specs (create,
update), their inspect form (a secret's data never in it), list filters, and a service's
references to them (`ContainerSpec.Secrets` / `.Configs`) as the files its replicas get."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from steelcup.api.filters import labels_match, str_map
from steelcup.errors import InvalidArgument
from steelcup.runtime.swarmfiles import SwarmFile, check_unique, config_target, secret_target
from steelcup.services.model import Kind, SwarmObject

FILTERS = frozenset({"id", "name", "names", "label"})
DEFAULT_MODE = 0o444  # the docker CLI's, and swarmkit's when a client sends none


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    labels: tuple[tuple[str, str], ...]
    data: bytes | None  # None: the body had no Data (an update of labels only)


def decode_spec(kind: Kind, body: Any) -> ObjectSpec:
    if not isinstance(body, dict):
        raise InvalidArgument(f"{kind.value} spec: expected an object")
    name = body.get("Name") or ""
    if not isinstance(name, str):
        raise InvalidArgument("Name: expected a string")
    driver = body.get("Driver")
    if isinstance(driver, dict) and driver.get("Name"):
        raise InvalidArgument(f"{kind.value} drivers are not supported by steelcup: the data "
                              "is given in the request")
    templating = body.get("Templating")
    if isinstance(templating, dict) and templating.get("Name"):
        raise InvalidArgument(f"{kind.value} templating is not supported by steelcup")
    raw = body.get("Data")
    data: bytes | None = None
    if raw is not None:
        if not isinstance(raw, str):
            raise InvalidArgument("Data: expected base64 text")
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidArgument("Data: not valid base64") from None
    labels = str_map(body.get("Labels"), "Labels")
    return ObjectSpec(name, tuple(sorted(labels.items())), data)


def encode(obj: SwarmObject, data: bytes | None = None) -> dict[str, Any]:
    """dockerd's Secret / Config; `data` only for a config (a secret's is never shown)."""
    spec: dict[str, Any] = {"Name": obj.name, "Labels": dict(obj.labels)}
    if data is not None and obj.kind is Kind.CONFIG:
        spec["Data"] = base64.b64encode(data).decode()
    return {"ID": obj.id, "Version": {"Index": obj.version}, "CreatedAt": obj.created_at,
            "UpdatedAt": obj.updated_at, "Spec": spec}


def matches(obj: SwarmObject, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "label":
            if not labels_match(dict(obj.labels), values):
                return False
        elif key == "id":
            if not any(obj.id.startswith(v) for v in values):
                return False
        elif key == "names":
            if obj.name not in values:
                return False
        elif not any(obj.name.startswith(v) for v in values):  # name: a prefix, as dockerd
            return False
    return True


def decode_references(container: dict[str, Any]) -> tuple[SwarmFile, ...]:
    """`ContainerSpec.Secrets` and `.Configs` as files (targets checked, ids not yet: the
    caller resolves them for the service's tenant)."""
    out: list[SwarmFile] = []
    for key, kind in (("Secrets", Kind.SECRET), ("Configs", Kind.CONFIG)):
        refs = container.get(key) or []
        if not isinstance(refs, list):
            raise InvalidArgument(f"ContainerSpec.{key}: expected a list")
        prefix = "Secret" if kind is Kind.SECRET else "Config"
        for ref in refs:
            if not isinstance(ref, dict):
                raise InvalidArgument(f"ContainerSpec.{key}[]: expected an object")
            object_id = ref.get(f"{prefix}ID") or ""
            name = ref.get(f"{prefix}Name") or ""
            if not isinstance(object_id, str) or not isinstance(name, str) or not (
                    object_id or name):
                raise InvalidArgument(f"ContainerSpec.{key}[]: {prefix}ID is needed")
            file = ref.get("File")
            if ref.get("Runtime") is not None and file is None:
                raise InvalidArgument(f"ContainerSpec.{key}[].Runtime (a credential spec) "
                                      "is not supported: steelcup places configs as files")
            if not isinstance(file, dict):
                raise InvalidArgument(f"ContainerSpec.{key}[].File is needed: steelcup "
                                      f"places {kind.value}s as files")
            file_name = file.get("Name") or name
            if not isinstance(file_name, str):
                raise InvalidArgument(f"ContainerSpec.{key}[].File.Name: expected a string")
            target = (secret_target(file_name) if kind is Kind.SECRET
                      else config_target(file_name))
            mode = file.get("Mode", DEFAULT_MODE)
            if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
                raise InvalidArgument(f"ContainerSpec.{key}[].File.Mode: a file mode "
                                      "(0 to 07777)")
            out.append(SwarmFile(kind.value, object_id, name, target,
                                 _file_id(file.get("UID"), f"{key}[].File.UID"),
                                 _file_id(file.get("GID"), f"{key}[].File.GID"), mode))
    check_unique(out)
    return tuple(out)


def _file_id(value: Any, what: str) -> int:
    """File.UID/GID: numeric strings in docker's API ("" or absent: 0)."""
    text = "0" if value in (None, "") else str(value)
    if not text.isdigit() or int(text) > 0xFFFFFFFE:
        raise InvalidArgument(f"ContainerSpec.{what}: a numeric id (names are not resolved)")
    return int(text)


def fill_ids(container: dict[str, Any], files: tuple[SwarmFile, ...]) -> None:
    """Write each resolved object's id and name into the ContainerSpec it came from (a
    reference by name alone, as steelcup's CLI sends, is stored as dockerd stores one)."""
    refs = [*(container.get("Secrets") or []), *(container.get("Configs") or [])]
    for ref, f in zip(refs, files, strict=True):
        prefix = "Secret" if f.kind == Kind.SECRET.value else "Config"
        ref[f"{prefix}ID"], ref[f"{prefix}Name"] = f.object_id, f.object_name
