"""CLI subcommands, one module per area.

`COMMANDS` lists every top-level command in `steelcup --help` order with the module that
defines it and its one-line help, so the CLI imports only the invoked command's module. Each
module has `register(subparsers, name, help_text)`, which adds the parser of one of its commands.
"""

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("containers", "create and start a container"),
    "create": ("containers", "create a container"),
    "start": ("containers", "start stopped containers"),
    "exec": ("containers", "run a command in a running container"),
    "logs": ("containers", "fetch the logs of a container"),
    "ps": ("containers", "list containers"),
    "inspect": ("containers", "low-level information on containers or images"),
    "stop": ("containers", "stop running containers"),
    "restart": ("containers", "restart containers"),
    "kill": ("containers", "kill running containers"),
    "rm": ("containers", "remove containers"),
    "wait": ("containers", "block until containers stop, print their exit codes"),
    "images": ("images", "list images"),
    "rmi": ("images", "remove images"),
    "tag": ("images", "create a tag TARGET that refers to SOURCE"),
    "load": ("images", "load images from a tar archive (docker save format)"),
    "import": ("images", "create an image from a root filesystem tarball"),
    "pull": ("images_registry", "download an image from a registry"),
    "push": ("images_registry", "upload an image to a registry"),
    "login": ("images_registry", "log in to a registry (credentials kept by the daemon)"),
    "logout": ("images_registry", "forget the credentials for a registry"),
    "save": ("images_registry", "save images to a tar archive (docker-archive + OCI layout)"),
    "history": ("images_registry", "show the history of an image"),
    "image": ("images_registry", "manage images"),
    "version": ("system", "show client and daemon versions"),
    "info": ("system", "show system-wide information"),
    "system": ("system", "manage the steelcup system"),
    "pool": ("system", "inspect the VM pool (templates and clones)"),
    "daemon": ("system", "run the steelcup daemon (serves the Docker Engine API)"),
    "diff": ("fs", "inspect changes to files or directories of a container"),
    "cp": ("fs", "copy files between a container and the local filesystem"),
    "export": ("fs", "export a container's filesystem as a tar archive"),
    "commit": ("fs", "create a new image from a container's changes"),
    "rename": ("fs", "rename a container"),
    "container": ("fs", "manage containers"),
    "network": ("network", "manage networks"),
    "volume": ("volume", "manage volumes"),
    "snapshot": ("snapshot", "snapshot volumes and make volumes from snapshots"),
    "tenant": ("tenant", "manage tenants and their credentials (operator)"),
    "func": ("func", "manage funcs: containers started by HTTP calls"),
}
