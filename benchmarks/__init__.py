"""VGS-Lightning benchmarks: the vectorised core against loop baselines structured as the official code,
caption loading, and training throughput. Run ``python -m benchmarks`` (see ``benchmarks/README.md``).

- ``baselines``: the loop baselines (matchmap double loop, DAVEnet loss loop, pooldot + triplets, calc_recalls,
  the librosa loading path), written for this project from the published definitions.
- ``harness``: timing protocol, equality checks, peak memory, machine description, the results table.
- ``core``: similarity, loss and recall rows; ``data``: loading rows; ``training``: samples/s, FLOPs, MFU.
"""
