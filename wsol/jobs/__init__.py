"""Jobs: read a dataset, call the library, write a run folder.

``train``, ``localize``, ``evaluate``, ``visualize`` and ``demo`` each hold one job; ``runfolder``
holds what they share (sharding across ranks, gathering, resume bookkeeping, rank-0 atomic
writes, the run-folder lock). Only the CLI and users import jobs; the library below never does.
"""
