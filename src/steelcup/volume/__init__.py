"""Named and anonymous volumes, bind mounts and tmpfs: parsing and storage."""
