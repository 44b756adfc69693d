"""Per-event log loss, clipped exactly the way scikit-learn's ``log_loss`` clips.

The loss is in nats (natural log). Probabilities are clipped to
``[eps, 1 - eps]`` and rows are not renormalised afterwards, which is what
``sklearn.metrics.log_loss`` does in scikit-learn 1.9.1, so the mean of these
per-event losses over a set of events equals ``log_loss(y, p, labels=...)``
on the same events.

For a binary model scikit-learn first builds the two-column matrix
``[1 - p, p]`` and then clips each column, so the loss of a negative label is
``-log(clip(1 - p))``, not ``-log(1 - clip(p))``. The functions here keep
that order.

Inputs are assumed valid: probabilities in ``[0, 1]`` and not NaN, checked
when a record is decoded. Only ``eps`` is checked here.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["DEFAULT_EPS", "binary_log_loss", "multiclass_log_loss"]

DEFAULT_EPS: float = float(np.finfo(np.float64).eps)
"""The clipping bound of scikit-learn 1.9.1's ``log_loss`` on float64 input.

It is the machine epsilon of float64, ``2**-52``; the largest loss one event
can have is therefore ``-log(2**-52)``, about 36.04 nats.
"""


def binary_log_loss(
    probability: NDArray[np.float64],
    label: NDArray[np.bool_],
    *,
    eps: float = DEFAULT_EPS,
) -> NDArray[np.float64]:
    """Return the log loss of each event of a binary model.

    Parameters
    ----------
    probability
        The predicted probability of the positive class, one per event.
    label
        Whether each event's outcome was the positive class.
    eps
        Clipping bound, in ``(0, 0.5)``: ``p`` and ``1 - p`` are clipped to
        ``[eps, 1 - eps]`` before the log is taken.

    Returns
    -------
    NDArray[np.float64]
        ``-log(clip(p))`` where the label is positive and
        ``-log(clip(1 - p))`` where it is negative, in nats.

    Raises
    ------
    ValueError
        If ``eps`` is outside ``(0, 0.5)`` or the two arrays differ in shape.

    Examples
    --------
    >>> import numpy as np
    >>> binary_log_loss(np.array([0.9, 0.2]), np.array([True, False]))
    array([0.10536052, 0.22314355])

    A certain and wrong prediction costs ``-log(eps)``, not infinity:

    >>> binary_log_loss(np.array([0.0]), np.array([True]))
    array([36.04365339])
    """
    _check_eps(eps)
    probability = np.asarray(probability, dtype=np.float64)
    label = np.asarray(label, dtype=np.bool_)
    _check_same_shape(probability=probability, label=label)

    positive = np.clip(probability, eps, 1.0 - eps)
    negative = np.clip(1.0 - probability, eps, 1.0 - eps)

    return np.where(label, -np.log(positive), -np.log(negative))


def multiclass_log_loss(
    probability_of_label: NDArray[np.float64],
    *,
    eps: float = DEFAULT_EPS,
) -> NDArray[np.float64]:
    """Return the log loss of each event of a multiclass model.

    Parameters
    ----------
    probability_of_label
        The probability the model gave to the class that turned out to be
        the outcome, one per event.
    eps
        Clipping bound, in ``(0, 0.5)``.

    Returns
    -------
    NDArray[np.float64]
        ``-log(clip(p_true))`` per event, in nats.

    Raises
    ------
    ValueError
        If ``eps`` is outside ``(0, 0.5)``.

    Examples
    --------
    >>> import numpy as np
    >>> multiclass_log_loss(np.array([0.5, 1.0, 0.0]))
    array([6.93147181e-01, 2.22044605e-16, 3.60436534e+01])

    >>> multiclass_log_loss(np.array([0.5]), eps=0.5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: eps must be in (0, 0.5), got 0.5; ...
    """
    _check_eps(eps)
    probability_of_label = np.asarray(probability_of_label, dtype=np.float64)

    return -np.log(np.clip(probability_of_label, eps, 1.0 - eps))


def _check_eps(eps: float) -> None:
    """Raise ``ValueError`` unless ``0 < eps < 0.5``; NaN fails too."""
    if not 0.0 < eps < 0.5:
        raise ValueError(
            f"eps must be in (0, 0.5), got {eps!r}; it clips probabilities to "
            f"[eps, 1 - eps]. Leave it at the default {DEFAULT_EPS!r} to match "
            "scikit-learn's log_loss."
        )


def _check_same_shape(
    *, probability: NDArray[np.float64], label: NDArray[np.bool_]
) -> None:
    if probability.shape != label.shape:
        raise ValueError(
            f"probability and label must have the same shape, got "
            f"{probability.shape} and {label.shape}: one label per prediction."
        )
