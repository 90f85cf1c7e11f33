"""Built-in benchsuite optimizers, installed as ``benchsuite.optimizers``.

Each module registers its optimizer in :data:`benchsuite.contracts.optimizer.OPTIMIZERS`
through the package's entry points (group ``benchsuite.optimizers``). The folder is
not a top-level package (see ``benchsuite.tasks`` for why).
"""

if __name__ != "benchsuite.optimizers":
    raise ImportError(
        f"The built-in optimizers install as 'benchsuite.optimizers', not '{__name__}': "
        "use `import benchsuite.optimizers` after `pip install -e .`"
    )
