"""The log line of a finished migration (vm/machine.py: migration_summary)."""

from steelcup.vm.machine import migration_summary


def test_the_summary_says_what_the_ram_pass_scanned_and_wrote() -> None:
    info = {"status": "completed", "total-time": 9860,
            "ram": {"total": 2147561472, "normal": 6368, "duplicate": 518000,
                    "transferred": 30575420}}
    assert migration_summary(info) == ("2048 MiB of RAM scanned: 6368 pages written, "
                                       "518000 zero; 30575420 bytes")


def test_a_reply_without_ram_figures_says_zeros() -> None:
    assert migration_summary({"status": "completed"}) == (
        "0 MiB of RAM scanned: 0 pages written, 0 zero; 0 bytes")
