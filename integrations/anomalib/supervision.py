"""Which anomalib models learn from labelled anomalies, and the refusal to feed generated ones to the others.

`AnoGenDataModule` puts labelled anomalies (``gt_label`` True, ``gt_mask`` set) into the TRAIN set. Only a
model whose training step reads those labels can use them:

- `WeakDraem` and `DeSTSeg` (this package), which declare ``consumes_anomalies = True``;
- anomalib's ``Supersimplenet(supervised=True)``, whose training step passes ``gt_mask`` / ``gt_label`` to
  its model and lets the classification loss train the whole network;
- any model of yours that declares a class or instance attribute ``consumes_anomalies = True``.

Every other model is a one-class model (PatchCore, PaDiM, anomalib's own Draem, Supersimplenet with
``supervised=False``, ...): it learns each train image as normal, so generated anomalies would be learned as
normal, and the detector would get worse at exactly the defects the bank was made for. anomalib's
``learning_type`` cannot tell them apart (it is ``ONE_CLASS`` for all of them, Supersimplenet included).
"""

from __future__ import annotations

from anomalib.models import Supersimplenet

#: The anomaly-consuming models, named in the refusal message.
CONSUMERS = "WeakDraem, DeSTSeg, Supersimplenet(supervised=True)"


def consumes_anomalies(model) -> bool:
    """Whether ``model`` learns from labelled anomalous train samples (see the module docstring).

    Args:
        model: An anomalib model (any object: a model's own ``consumes_anomalies`` attribute decides first).

    Returns:
        True for `WeakDraem`, `DeSTSeg`, ``Supersimplenet(supervised=True)`` and models declaring
        ``consumes_anomalies = True``; False otherwise.
    """
    declared = getattr(model, "consumes_anomalies", None)
    if isinstance(declared, bool):
        return declared
    return isinstance(model, Supersimplenet) and bool(getattr(model, "supervised", False))


def check_consumes_anomalies(model, *, p: float, allow_one_class: bool) -> None:
    """Refuse to train a one-class ``model`` on generated anomalies (``p > 0``) unless ``allow_one_class``.

    Raises:
        ValueError: ``model`` does not consume anomalies, ``p > 0`` and ``allow_one_class`` is False; the
            message names the model, says why, and the three ways out.
    """
    if p == 0 or allow_one_class or model is None or consumes_anomalies(model):
        return
    name = type(model).__name__
    if name == "Supersimplenet":
        name = "Supersimplenet(supervised=False)"
    raise ValueError(
        f"AnoGenDataModule(p={p}) would train {name} on generated anomalies, but {name} is a one-class model: "
        "it learns every train image as normal, so it would learn the generated defects as normal. Use a "
        f"model that learns from labelled anomalies ({CONSUMERS}, or one that declares "
        "`consumes_anomalies = True`), set p=0 to train on the normal images only, or pass "
        "allow_one_class=True to AnoGenDataModule if that is what you want"
    )
