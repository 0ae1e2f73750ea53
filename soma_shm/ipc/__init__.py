"""Inter-process machinery: shared audio blocks, output slot rings, the worker loop and supervision.

Only the main process creates and unlinks segments; workers attach read-only and only close.
"""
