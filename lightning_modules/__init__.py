"""VGS-Lightning models.

- ``nets``: the papers' audio and image nets as plain ``nn.Module``s.
- ``core``: plain torch: similarities, losses, exact recall@k, grounding and localisation.
- ``metrics``: the DDP-exact torchmetrics Metrics (recall@k, place accuracy).
- LightningModules: ``NIPS2016``, ``ACL2017``, ``DAVEnet``, ``ResDAVEnet``, ``ResDAVEnetVQ`` (over
  ``RetrievalModule``) and ``PlaceClassifier`` (the warm-up), all subclasses of ``VGSModule``.
- ``checkpoints`` (reading checkpoints for tools), ``convert`` (official checkpoints), ``analysis`` (commands).

The LightningModules are imported lazily, so that ``lightning_modules.nets`` and ``lightning_modules.core`` can be
lifted into other code without importing Lightning.
"""

import lazy_loader

# scientific-python's lazy_loader (SPEC 1) builds the module's __getattr__; datamodules uses it the same way.
__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "acl2017": ["ACL2017"],
        "base": ["RetrievalModule", "VGSModule"],
        "davenet": ["DAVEnet"],
        "nips2016": ["NIPS2016"],
        "place_classifier": ["PlaceClassifier"],
        "resdavenet": ["ResDAVEnet", "ResDAVEnetVQ"],
    },
)


def load_all() -> None:
    """Import every LightningModule, so that LightningCLI can resolve short names like ``--model=DAVEnet``."""
    for name in __all__:
        __getattr__(name)
