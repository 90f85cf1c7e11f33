"""Built-in benchsuite tasks. Each module registers its task in ``benchsuite.task.TASKS``;
the package's entry points (group ``benchsuite.tasks``) make the registry import them."""
