"""VGS-Lightning models.

- ``nets``: the papers' audio and image nets as plain ``nn.Module``s.
- ``core``: plain torch: similarities, losses, exact recall@k, grounding and localisation.
- ``metrics``: the DDP-exact torchmetrics Metrics (recall@k, place accuracy).
- LightningModules: ``NIPS2016``, ``ACL2017``, ``DAVEnet``, ``ResDAVEnet`` (over ``RetrievalModule``) and
  ``PlaceClassifier`` (the warm-up), all subclasses of ``VGSModule``.
- ``checkpoints`` (reading checkpoints for tools), ``convert`` (official checkpoints), ``analysis`` (commands).

The LightningModules are imported lazily, so that ``lightning_modules.nets`` and ``lightning_modules.core`` can be
lifted into other code without importing Lightning.
"""

import importlib

_LAZY = {
    "ACL2017": ".acl2017",
    "DAVEnet": ".davenet",
    "NIPS2016": ".nips2016",
    "PlaceClassifier": ".place_classifier",
    "ResDAVEnet": ".resdavenet",
    "RetrievalModule": ".base",
    "VGSModule": ".base",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_all() -> None:
    """Import every LightningModule, so that LightningCLI can resolve short names like ``--model=DAVEnet``."""
    for module in set(_LAZY.values()):
        importlib.import_module(module, __name__)
