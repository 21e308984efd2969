"""The plain-torch core of VGS-Lightning: no Lightning, no torchmetrics, no ``datamodules``.

    similarity.py         dot / SISA / MISA / SIMA similarity matrices and paired scores (masked, chunked)
    losses.py             sampled margin rank, ResDAVEnet triplets, InfoNCE, all-negatives triplets
    retrieval_metrics.py  exact recall@k and ranks from a similarity matrix
    grounding.py          matchmap heat maps of captions and words, word frame spans, colour helpers
    localization.py       speech-prompted localisation accuracy (pointing game) and its baselines
    weights.py            the one safe reader of weights files (torch.load(weights_only=True), clear errors)

Together with ``lightning_modules.nets`` this is the library a researcher can lift into their own code; a test
checks that importing it loads none of the above.
"""
