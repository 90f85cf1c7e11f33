"""Built-in benchsuite tasks, installed as ``benchsuite.tasks``.

Each module registers its task in :data:`benchsuite.contracts.task.TASKS`; the
package's entry points (group ``benchsuite.tasks``) make the registry import them.
The folder is not a top-level package: a generic name like ``tasks`` would collide
with a user's own ``tasks.py``, and one module must not be importable under two names.
"""

if __name__ != "benchsuite.tasks":
    raise ImportError(
        f"The built-in tasks install as 'benchsuite.tasks', not '{__name__}': "
        "use `import benchsuite.tasks` after `pip install -e .`"
    )
