"""Container checkpoints, docker's Engine API shape (docs/checkpoints.md): create, list and
remove under `/containers/{id}/checkpoints`; `POST /containers/{id}/start?checkpoint=NAME`
restores one (routes.py). Thin adapters to the runtime: the `/containers/{id}` scope has
resolved the container for the caller already, so a tenant reaches only its own containers'
checkpoints."""

from __future__ import annotations

from steelcup.api.http import EmptyResponse, JsonResponse, Request, Response, Router
from steelcup.errors import InvalidArgument
from steelcup.runtime.checkpoints import Checkpoint
from steelcup.runtime.containers import Runtime


def register(router: Router, runtime: Runtime) -> None:
    api = _CheckpointApi(runtime)
    router.add("POST", "/containers/{id}/checkpoints", api.create)
    router.add("GET", "/containers/{id}/checkpoints", api.list)
    router.add("DELETE", "/containers/{id}/checkpoints/{name}", api.remove)
    # steelcup's own: suspend and resume (docs/checkpoints.md); 304 if already so
    router.add("POST", "/containers/{id}/suspend", api.suspend)
    router.add("POST", "/containers/{id}/resume", api.resume)


def check_no_dir(req: Request) -> None:
    """docker's `--checkpoint-dir`: checkpoints live with their container here."""
    if req.q("dir") or req.q("checkpoint-dir"):
        raise InvalidArgument("a checkpoint directory is not supported: steelcup keeps "
                              "checkpoints with their container")


def encode(checkpoint: Checkpoint) -> dict[str, object]:
    """docker's Checkpoint summary (`Name`), plus steelcup's own facts."""
    return {"Name": checkpoint.name, "Created": checkpoint.created,
            "SteelcupSizeBytes": checkpoint.state_bytes}


class _CheckpointApi:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def create(self, req: Request) -> Response:
        body = await req.json()
        name = body.get("CheckpointID")
        if not isinstance(name, str) or not name:
            raise InvalidArgument("CheckpointID (the checkpoint's name) is required")
        if body.get("CheckpointDir"):
            raise InvalidArgument("a checkpoint directory is not supported: steelcup keeps "
                                  "checkpoints with their container")
        exit_ = body.get("Exit", False)
        if not isinstance(exit_, bool):
            raise InvalidArgument("Exit must be a boolean")
        await self.rt.checkpoint_create(req.params["id"], name, leave_running=not exit_)
        return EmptyResponse(201)

    async def suspend(self, req: Request) -> Response:
        return EmptyResponse(204 if await self.rt.suspend(req.params["id"]) else 304)

    async def resume(self, req: Request) -> Response:
        return EmptyResponse(204 if await self.rt.resume(req.params["id"]) else 304)

    async def list(self, req: Request) -> Response:
        check_no_dir(req)
        return JsonResponse([encode(c) for c in self.rt.checkpoints(req.params["id"])])

    async def remove(self, req: Request) -> Response:
        check_no_dir(req)
        await self.rt.checkpoint_remove(req.params["id"], req.params["name"])
        return EmptyResponse(204)
