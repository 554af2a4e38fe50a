"""Every reach into a private attribute, function or module of Lightning, Hydra or torch, and every replacement of a
library's own method, is here: one module per library, one named entry each, so that an upgrade that moves one is
found in one place. `tests/test_compat.py` checks each entry against the installed versions and fails naming it.

Where a public API does the job, the library uses it instead; what is left here is what no public API offers.
"""
