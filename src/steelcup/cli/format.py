"""Pure output formatting the docker CLI way: durations, sizes, tables, `--format` templates."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from steelcup.errors import InvalidArgument
from steelcup.humanize import human_duration

__all__ = ["human_duration"]


def human_size(size: float) -> str:
    """go-units HumanSizeWithPrecision(size, 3): decimal units, '4.26MB', '512B', '1.2kB'."""
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"]
    value = float(size)
    index = 0
    while value >= 1000 and index < len(units) - 1:
        value /= 1000
        index += 1
    return f"{value:.3g}{units[index]}"


def ellipsis(text: str, width: int) -> str:
    """Truncate to `width` display characters with '…' as the last one (docker's Ellipsis)."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return text[: width - 1] + "…"


def short_id(value: str) -> str:
    return value.removeprefix("sha256:")[:12]


def parse_time(value: Any) -> float | None:
    """Docker's RFC 3339 timestamps (nanoseconds allowed) or unix seconds -> unix seconds."""
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    text = value.strip()
    match = re.match(r"^(.*?T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)?$", text)
    if match is None:
        return None
    base, frac, zone = match.groups()
    try:
        parsed = datetime.fromisoformat(base)
    except ValueError:
        return None
    if zone in (None, "Z"):
        parsed = parsed.replace(tzinfo=UTC)
    else:
        parsed = datetime.fromisoformat(base + zone)
    return parsed.timestamp() + (float("0" + frac) if frac else 0.0)


def created_ago(created: Any, now: float) -> str | None:
    """'3 hours ago' for a unix time as the API gives it (None if there is none)."""
    if isinstance(created, int | float) and created > 0:
        return human_duration(max(0.0, now - created)) + " ago"
    return None


def split_ref(ref: str) -> tuple[str, str]:
    """A 'repo:tag' reference's repository and tag as `docker images` shows them: a ':'
    before the last '/' is a registry's port, and such a reference has the tag '<none>'."""
    repo, _, tag = ref.rpartition(":")
    if "/" in tag:
        return ref, "<none>"
    return repo, tag


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """docker's tabwriter layout (minwidth 10, padding 3): widest cell + 3 spaces, at least 10."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *[list(r) for r in rows]]:
        cells = [cell.ljust(max(10, widths[i] + 3)) for i, cell in enumerate(row[:-1])]
        lines.append(("".join(cells) + row[-1]).rstrip() if row else "")
    return "\n".join(lines) + "\n"


def format_ports(ports: Any) -> str:
    if not isinstance(ports, list):
        return ""
    out = []
    for port in ports:
        if not isinstance(port, dict):
            continue
        proto = port.get("Type", "tcp")
        private = port.get("PrivatePort", "")
        if port.get("PublicPort"):
            out.append(f"{port.get('IP', '0.0.0.0')}:{port['PublicPort']}->{private}/{proto}")
        else:
            out.append(f"{private}/{proto}")
    return ", ".join(out)


def ps_table(containers: Sequence[dict[str, Any]], *, now: float, no_trunc: bool = False) -> str:
    """`docker ps` output from GET /containers/json entries."""
    rows = []
    for c in containers:
        cid = str(c.get("Id", ""))
        command = str(c.get("Command", ""))
        if not no_trunc:
            cid = cid[:12]
            command = ellipsis(command, 20)
        created = c.get("Created")
        created_text = ""
        if isinstance(created, int | float) and created > 0:
            created_text = human_duration(max(0.0, now - created)) + " ago"
        names = [str(n).removeprefix("/") for n in c.get("Names") or []]
        if not no_trunc:
            # docker hides link aliases ("/other/alias") unless --no-trunc
            names = [n for n in names if "/" not in n]
        rows.append(
            [
                cid,
                str(c.get("Image", "")),
                f'"{command}"',
                created_text,
                str(c.get("Status", "")),
                format_ports(c.get("Ports")),
                ",".join(names),
            ]
        )
    headers = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    return table(headers, rows)


def ps_row(c: dict[str, Any], *, now: float, no_trunc: bool = False) -> dict[str, str]:
    """The fields `docker ps --format` templates see ({{.ID}}, {{.Names}}, {{.Status}}, ...)."""
    cid = str(c.get("Id", ""))
    command = str(c.get("Command", ""))
    created = c.get("Created")
    running_for = created_ago(created, now) or ""
    labels = c.get("Labels") or {}
    return {
        "ID": cid if no_trunc else cid[:12],
        "Image": str(c.get("Image", "")),
        "Command": f'"{command if no_trunc else ellipsis(command, 20)}"',
        "RunningFor": running_for,
        "Status": str(c.get("Status", "")),
        "State": str(c.get("State", "")),
        "Ports": format_ports(c.get("Ports")),
        "Names": ",".join(str(n).removeprefix("/") for n in c.get("Names") or []),
        "Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
    }


def images_table(images: Sequence[dict[str, Any]], *, now: float, no_trunc: bool = False) -> str:
    """`docker images` output from GET /images/json entries (one row per tag)."""
    rows = []
    for image in images:
        image_id = str(image.get("Id", ""))
        image_id = image_id if no_trunc else short_id(image_id)
        created_text = created_ago(image.get("Created"), now) or "N/A"
        size = human_size(float(image.get("Size") or 0))
        tags = [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]
        if not tags:
            tags = ["<none>:<none>"]
        for ref in tags:
            repo, tag = split_ref(ref)
            rows.append([repo, tag, image_id, created_text, size])
    return table(["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], rows)


# ----------------------------------------------------------------- Go template subset

_ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


def _go_print(value: Any) -> str:
    """How Go's text/template prints a decoded JSON value."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, dict):
        inner = " ".join(f"{k}:{_go_print(v)}" for k, v in sorted(value.items()))
        return f"map[{inner}]"
    if isinstance(value, list):
        return "[" + " ".join(_go_print(v) for v in value) + "]"
    return str(value)


def _lookup(obj: Any, path: str) -> Any:
    if path == ".":
        return obj
    value = obj
    for part in path.strip(".").split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, dict):
            return None
        else:
            kind = type(value).__name__
            raise InvalidArgument(f"template: can't evaluate field {part} in {kind}")
    return value


def render_template(template: str, obj: Any) -> str:
    """A small subset of Go templates: `{{.A.B}}`, `{{json .A}}`, `{{.}}`, `{{upper/lower .A}}`."""
    out: list[str] = []
    pos = 0
    for match in _ACTION.finditer(template):
        out.append(template[pos : match.start()])
        pos = match.end()
        words = match.group(1).split()
        if len(words) == 1 and words[0].startswith("."):
            out.append(_go_print(_lookup(obj, words[0])))
        elif len(words) == 2 and words[0] == "json" and words[1].startswith("."):
            out.append(json.dumps(_lookup(obj, words[1]), separators=(",", ":")))
        elif len(words) == 2 and words[0] in ("upper", "lower") and words[1].startswith("."):
            text = _go_print(_lookup(obj, words[1]))
            out.append(text.upper() if words[0] == "upper" else text.lower())
        else:
            raise InvalidArgument(
                f"template: unsupported action {{{{{match.group(1)}}}}} "
                "(supported: {{.Field.Sub}}, {{json .Field}}, {{upper .F}}, {{lower .F}})"
            )
    out.append(template[pos:])
    return "".join(out).replace("\\n", "\n").replace("\\t", "\t")
