"""HELLO to a VM adopted after a live restore (`Machine._hello_adopted`): a guest that does not
answer over the first connection is asked again over a new one, within the adopt deadline."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from steelcup.errors import GuestProtocolError
from steelcup.guest import protocol as p
from steelcup.guest.client import GuestClient
from steelcup.guest.protocol import Op, Tag
from steelcup.vm.machine import Machine
from steelcup.vm.qemu_args import VmSpec


def _guest(answer_on: set[int], connections: list[int]) -> Callable[
        [asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    """A stand-in for QEMU's chardev: answers HELLO only on the connections numbered in
    `answer_on` (from 1), reads and drops everything on the others."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        number = len(connections)
        decoder = p.FrameDecoder()
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    if frame.op == Op.HELLO and number in answer_on:
                        writer.write(p.make_frame(Op.HELLO_OK, frame.id, [
                            (Tag.VERSION, p.PROTOCOL_VERSION), (Tag.KERNEL, "6.1"),
                            (Tag.INIT_VERSION, "t")]))
                        await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    return serve


def _run(answer_on: set[int], deadline_s: float) -> tuple[list[int], str | None]:
    connections: list[int] = []

    async def main() -> str | None:
        with tempfile.TemporaryDirectory() as tmp:
            machine = Machine(VmSpec(Path("/k"), Path("/i"), Path(tmp)))
            server = await asyncio.start_unix_server(_guest(answer_on, connections),
                                                     str(machine.spec.ctl_socket))
            try:
                first = await GuestClient.connect(machine.spec.ctl_socket, 1.0)
                client, info = await machine._hello_adopted(first, deadline_s)
                await client.close()
                return info.kernel
            finally:
                server.close()

    return connections, asyncio.run(asyncio.wait_for(main(), 10))


def test_a_guest_that_answers_at_once_is_asked_once() -> None:
    assert _run({1}, 2.0) == ([1], "6.1")


def test_no_answer_over_the_first_connection_asks_again_over_a_new_one() -> None:
    assert _run({2}, 2.0) == ([1, 2], "6.1")


def test_no_answer_over_either_connection_fails() -> None:
    with pytest.raises(GuestProtocolError, match="did not answer HELLO"):
        _run(set(), 1.0)
