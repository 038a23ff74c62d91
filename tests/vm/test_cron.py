"""Cron jobs with real VMs (docs/cron.md): every run is a fresh container in a fresh VM from
the warm pool, recorded with its exit code and last log lines; the concurrency policies;
`cron run`; a daemon restart in the middle of a schedule gives no burst of missed runs.

One daemon of this file's own serves every test (the restart test stops and starts it on the
same state root); it runs without networking, as job containers here need none.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.vm.support import (
    BUSYBOX_TAR,
    Daemon,
    leftovers_of,
    need_assets,
    start_daemon,
    stop_daemon,
    wait_pool_ready,
    wait_until,
)

pytestmark = pytest.mark.vm
IMG = "steelcup/busybox"


class CronDaemon:
    """A daemon that can be restarted on the same root."""

    def __init__(self, base: Path) -> None:
        self.root, self.sock = base / "root", base / "run" / "steelcup.sock"
        self.d = start_daemon(self.root, self.sock)

    def restart(self) -> None:
        stop_daemon(self.d)
        self.d = start_daemon(self.root, self.sock)

    def history(self, name: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = json.loads(
            self.d.out("cron", "history", "--format", "json", name))
        return runs

    def ended(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.history(name) if r["Status"] != "running"]

    def create(self, name: str, *args: str) -> None:
        """A cron of `args` (its flags, then the shell command its runs run)."""
        assert self.d.out("cron", "create", "--name", name, *args[:-1], "--network", "none",
                          IMG, "sh", "-c", args[-1]).strip() == name


@pytest.fixture(scope="module")
def cron(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CronDaemon]:
    need_assets()
    base = tmp_path_factory.mktemp("cron")
    daemon = CronDaemon(base)
    try:
        daemon.d.cli("load", "-i", str(BUSYBOX_TAR), check=True)
        wait_pool_ready(daemon.d)
        yield daemon
    finally:
        stop_daemon(daemon.d)
        problems = leftovers_of(daemon.root)
        assert not problems, "after daemon shutdown: " + "\n".join(problems)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _cache_hits(d: Daemon) -> int:
    pool = json.loads(d.out("system", "info", "-f", "{{json .Steelcup.Pool}}"))
    return int(pool["CacheHits"])


def _no_job_containers(d: Daemon) -> bool:
    return d.out("ps", "-aq").strip() == ""


def test_every_5s_records_runs_with_exit_codes_and_log_lines(cron: CronDaemon) -> None:
    hits = _cache_hits(cron.d)
    cron.create("tick", "--schedule", "@every 5s", "--concurrency", "allow",
                "-e", "GREETING=hello",  # a run flag: part of the job's container
                "echo $GREETING from $(hostname); echo second line; exit 3")
    try:
        wait_until(lambda: len(cron.ended("tick")) >= 2, "two ended runs", timeout_s=120,
                   interval_s=1)
    finally:
        cron.d.out("cron", "suspend", "tick")
    runs = cron.ended("tick")
    for run in runs[:2]:
        assert run["Status"] == "failed" and run["ExitCode"] == 3, run
        assert run["Logs"][-1] == "second line" and run["Logs"][0].startswith("hello from")
        assert run["ContainerId"] and _at(run["Finished"]) >= _at(run["Started"])
    assert runs[0]["ContainerId"] != runs[1]["ContainerId"]  # a new container each time
    assert runs[0]["Logs"][0] != runs[1]["Logs"][0]  # ... with its own host name
    assert _cache_hits(cron.d) > hits  # job VMs come from the warm pool like any run's
    listed = cron.d.out("cron", "ls")
    assert "tick" in listed and "@every 5s" in listed and "suspended" in listed
    shown = cron.d.out("cron", "history", "--logs", "tick")
    assert "second line" in shown and "failed" in shown
    cron.d.out("cron", "rm", "--force", "tick")
    wait_until(lambda: _no_job_containers(cron.d), "job containers removed", timeout_s=60)


def test_forbid_skips_while_the_previous_still_runs(cron: CronDaemon) -> None:
    cron.create("slow", "--schedule", "@every 5s", "--concurrency", "forbid", "sleep 30")
    try:
        wait_until(lambda: any(r["Status"] == "skipped" for r in cron.history("slow")),
                   "a skipped run", timeout_s=120, interval_s=1)
        runs = cron.history("slow")
        assert [r["Status"] for r in runs].count("running") == 1, runs
        assert len(cron.d.out("ps", "-q").split()) == 1  # never a second at once
    finally:
        cron.d.out("cron", "rm", "--force", "slow")
    wait_until(lambda: _no_job_containers(cron.d), "job containers removed", timeout_s=60)


def test_replace_stops_the_running_one(cron: CronDaemon) -> None:
    cron.create("repl", "--schedule", "@every 5s", "--concurrency", "replace",
                "trap 'echo got TERM; exit 7' TERM; echo started; sleep 60 & wait")
    try:
        wait_until(lambda: any(r["Status"] == "stopped" for r in cron.history("repl")),
                   "a replaced run", timeout_s=120, interval_s=1)
        stopped = next(r for r in cron.history("repl") if r["Status"] == "stopped")
        assert stopped["ExitCode"] == 7 and stopped["Logs"] == ["started", "got TERM"]
        wait_until(lambda: any(r["Status"] == "running" and r["Started"] > stopped["Finished"]
                               for r in cron.history("repl")),
                   "the run that replaced it", timeout_s=60, interval_s=1)
    finally:
        cron.d.out("cron", "rm", "--force", "repl")
    wait_until(lambda: _no_job_containers(cron.d), "job containers removed", timeout_s=60)


def test_cron_run_runs_now(cron: CronDaemon) -> None:
    cron.create("now", "--schedule", "@yearly", "echo ran now")
    try:
        run_id, cid = cron.d.out("cron", "run", "now").split()
        wait_until(lambda: cron.ended("now"), "the run's end", timeout_s=90, interval_s=0.5)
        [run] = cron.history("now")
        assert (run["Id"], run["ContainerId"], run["Manual"]) == (run_id, cid, True)
        assert (run["Status"], run["ExitCode"], run["Logs"]) == ("succeeded", 0, ["ran now"])
        wait_until(lambda: _no_job_containers(cron.d), "its container removed", timeout_s=30)
    finally:
        cron.d.out("cron", "rm", "now")


def test_a_daemon_restart_mid_schedule_gives_no_burst(cron: CronDaemon) -> None:
    cron.create("beat", "--schedule", "@every 5s", "echo beat")
    try:
        wait_until(lambda: cron.ended("beat"), "a first run", timeout_s=120, interval_s=1)
        stop_daemon(cron.d)
        down_at = time.time()
        time.sleep(16)  # three fire times or more pass while the daemon is down
        cron.restart()
        up_at = time.time()
        wait_until(lambda: any(r["Status"] == "missed" for r in cron.history("beat")),
                   "the missed runs recorded", timeout_s=60, interval_s=0.5)
        time.sleep(3)  # less than one interval: only what the restart decided
        runs = cron.history("beat")
        [missed] = [r for r in runs if r["Status"] == "missed"]
        assert missed["Missed"] >= 2, missed
        late = [r for r in runs if r["Status"] != "missed" and r["Scheduled"]
                and down_at < _at(r["Scheduled"]).timestamp() < up_at]
        assert len(late) <= 1, runs  # at most one late run, never a burst
    finally:
        cron.d.out("cron", "rm", "--force", "beat")
    wait_until(lambda: _no_job_containers(cron.d), "job containers removed", timeout_s=60)
