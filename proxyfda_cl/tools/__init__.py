"""Measurement tools: the training-step and per-epoch overhead of each strategy
(``proxyfda-cl overhead``, ``bench/``). They sit above the strategies and the training side
and drive Avalanche's loop one step at a time (``stepping``); no run imports them.
"""
