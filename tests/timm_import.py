"""timm for the tests, also where the installed torchvision does not fit torch.

The package imports timm plainly (``keras_densenet.apps.source_models.timm_model``);
a test module calls ``import_timm()`` first, so that the module it leaves in
``sys.modules`` is the one the package finds.
"""


def import_timm():
    """``import timm``, also where the installed torchvision does not fit torch.

    timm imports torchvision at import time. A torchvision wheel built for
    another torch (pip pairs the CPU torch with PyPI's CUDA torchvision) fails
    there, registering fake kernels for C++ operators it could not load. timm's
    DenseNet uses none of them, so that import is retried with those
    registrations skipped; anything else fails as usual.
    """
    try:
        import timm
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        import sys

        import torch.library

        for name in [n for n in sys.modules if n == "torchvision" or n.startswith(
                ("torchvision.", "timm"))]:
            del sys.modules[name]
        register_fake = torch.library.register_fake

        def tolerant(op, func=None, /, **kwargs):
            try:
                torch._C._dispatch_find_schema_or_throw(str(op), "")
            except RuntimeError:  # the operator's C++ library did not load
                return func if func is not None else (lambda f: f)
            return register_fake(op, func, **kwargs) if func else register_fake(op, **kwargs)

        torch.library.register_fake = tolerant
        try:
            import timm
        finally:
            torch.library.register_fake = register_fake
    return timm
