"""Built-in benchsuite optimizers, registered in ``benchsuite.optim.OPTIMIZERS`` through
the package's entry points (group ``benchsuite.optimizers``)."""
