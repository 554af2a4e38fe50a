"""A module of dict inputs under the user's own class path: hydralight.testing's masked mean (forward(values, mask),
dict batches), which only this outside project's configs name, so eval and export build it only with them."""

from hydralight.testing.masked import MaskedMeanData, MaskedMeanRegression


class MaskedRegression(MaskedMeanRegression):
    """forward(values, mask) -> the masked mean through a Linear."""


class MaskedData(MaskedMeanData):
    """Dict batches {values, mask, target}."""
