"""A model's training state and memory mode, for moving a network between memory modes.

``memory_mode(model)`` is the ``memory_efficient`` a model was built with;
``training_state`` / ``copy_training_state`` copy its weights and optimizer
state by variable path, which is the same in every mode (``model.in_memory_mode``
rebuilds a model in another mode).
"""


def memory_mode(model):
    """The ``memory_efficient`` that ``model`` was built with; ``None`` where it records
    no architecture (a model that this package did not build, or of keras-densenet 0.1)."""
    architecture = (getattr(model, "densenet_config", None) or {}).get("architecture")
    return architecture.get("memory_efficient", False) if architecture else None


def training_state(model):
    """``{key: variable}`` of ``model``'s weights (key: the path) and of its optimizer's
    variables (key: ``(i, name)``, the i-th optimizer in them, as a LossScaleOptimizer
    lists its own and then its inner optimizer's: their paths start with instance names
    such as ``"sgd_2/"``, which differ between two models)."""
    state = {variable.path: variable for variable in model.weights}
    owners = {}
    optimizer = getattr(model, "optimizer", None)  # an uncompiled model has none
    for variable in optimizer.variables if optimizer is not None else ():
        owner, _, name = variable.path.rpartition("/")
        state[owners.setdefault(owner, len(owners)), name] = variable
    return state


def copy_training_state(source, target):
    """Give each of ``target``'s ``training_state`` variables the value of ``source``'s
    under the same key (the same network in another memory mode: the same keys)."""
    values = training_state(source)
    for key, variable in training_state(target).items():
        variable.assign(values[key])
