"""A task's image that its tenant does not have is pulled first, as docker's agent does:
from its registry, with the tenant's saved login (`docker login`), as the tenant's image
(its `images` quota applies)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from steelcup.errors import NotFound
from steelcup.image import registry
from steelcup.image.credentials import TenantCredentials
from steelcup.image.reference import parse_reference
from steelcup.image.store import ImageStore

# (image reference, tenant "" = the operator) -> None once the tenant has the image
PullImage = Callable[[str, str], Awaitable[None]]


def has_image(images: ImageStore, ref: str, tenant: str) -> bool:
    try:
        images.get(ref, tenant or None)
    except NotFound:
        return False
    return True


def puller(images: ImageStore, root: Path,
           options: registry.RegistryOptions | None = None) -> PullImage:
    """Pulls in a worker thread (the registry client blocks)."""
    credentials = TenantCredentials(root)
    opts = options or registry.RegistryOptions()

    async def pull(ref_text: str, tenant: str) -> None:
        ref = parse_reference(ref_text)
        login = credentials.of(tenant or None).get(ref.domain)
        await asyncio.to_thread(registry.pull, ref, images, None, credentials=login,
                                options=opts, tenant=tenant or None)

    return pull
