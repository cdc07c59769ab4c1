"""The readout kinds of the C export, one emitter object each, kept in one registry.

A task's readout kind ("rgba", "vote", "head", "mask"; see :class:`ModelSpec`) is looked
up here and nowhere else: the emitter knows the C API it declares, the C code that
implements it (for a float32 state and for the compact int8 state), the number of
classes it reports, and its PyTorch reference (:func:`ncaflow.export.readout.predict`).
"""

from __future__ import annotations

from string import Template
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ncaflow.export.errors import ExportError

__all__ = ["READOUTS", "ReadoutEmitter", "emitter", "readout_defines"]


class ModelSpec(Protocol):
    """What a readout reads of :class:`ncaflow.export.spec.ModelSpec` (which imports this
    registry, so the type is spelled out here)."""

    @property
    def readout(self) -> str: ...
    @property
    def config(self) -> Any: ...
    @property
    def threshold(self) -> float | None: ...
    @property
    def head_w(self) -> np.ndarray | None: ...
    @property
    def head_b(self) -> np.ndarray | None: ...
    @property
    def n_classes(self) -> int: ...
    @property
    def head_w1(self) -> np.ndarray | None: ...
    @property
    def head_b1(self) -> np.ndarray | None: ...


_CLASSIFY_DOC = " *         scores (NULL or ${P}_CLASSES floats) receives the "


class ReadoutEmitter:
    """One readout kind. Subclasses fill the class attributes and the methods."""

    kind: ClassVar[str]
    id: ClassVar[int]  # <NAME>_READOUT in C
    verb: ClassVar[str]  # the C function: <name>_<verb>
    returns: ClassVar[str]  # "void" or "int"
    out_param: ClassVar[str]  # its last parameter
    doc: ClassVar[str]  # the API comment lines (without the signature line)
    classes: ClassVar[bool] = False  # reports <NAME>_CLASSES scores
    needs_image: ClassVar[bool] = True  # the seed state holds an image
    unit: ClassVar[str] = "prediction"  # what `agreement` counts

    def signature(self, p: str, state: str = "float") -> str:
        return (
            f"{self.returns} {p}_{self.verb}(const {state} *state, int h, int w, {self.out_param})"
        )

    def api(self, p: str, big: str, state: str = "float") -> tuple[str, str]:
        """(the API comment for the header's top, the declaration)."""
        sig = self.signature(p, state)
        pad = "void " if self.returns == "void" else "int   "
        head = f" *   {pad}{sig[len(self.returns) + 1 :]};\n"
        return head + Template(self.doc).substitute(p=p, P=big), f"{sig};"

    def call(self, p: str, inner: str) -> str:
        """The body of ``<p>_<verb>`` forwarding to ``<inner>_<verb>`` (cascade headers)."""
        call = f"{inner}_{self.verb}(state, h, w, {self.out_param.split('*')[-1]})"
        return f"return {call};" if self.returns == "int" else f"{call};"

    def n_classes(self, spec: ModelSpec) -> int:
        return spec.n_classes if self.classes else 0

    def with_head(self, task: str) -> str:
        """The readout kind when a linear head reads the hidden channels out."""
        raise ExportError(
            f"a linear head is only exported for the vote readout of classification, "
            f"not for task {task!r}"
        )

    def c_float(self, spec: ModelSpec | None = None) -> str:
        """The implementation for a float32 state (``${p}``/``${P}`` placeholders); ``spec``
        for readouts whose code depends on the model (an MLP head)."""
        raise NotImplementedError

    def c_int8(self, spec: ModelSpec | None = None) -> str:
        """The implementation for the compact int8 state, read through ``${p}__value``."""
        raise NotImplementedError

    def predict(self, spec: ModelSpec, state: Tensor) -> Tensor:
        """Final states (B, C, H, W) -> this readout's prediction."""
        raise NotImplementedError

    def agreement(self, a: Tensor, b: Tensor) -> float:
        """The fraction of equal predictions (per image or per pixel)."""
        return float((a == b).float().mean())


class RgbaReadout(ReadoutEmitter):
    kind, id, verb, returns, out_param = "rgba", 0, "rgba", "void", "float *rgba"
    doc = (
        " *         copies state channels 0..3 (premultiplied RGBA) into rgba (h*w*4 floats, HWC)."
    )
    needs_image = False
    unit = "visible-cell (alpha > 0.1)"

    def c_float(self, spec: ModelSpec | None = None) -> str:
        return """void ${p}_rgba(const float *state, int h, int w, float *rgba)
{
    long i, n = (long)h * (long)w;
    int c;
    for (i = 0; i < n; ++i)
        for (c = 0; c < 4; ++c) rgba[i * 4 + c] = state[i * ${P}_CHANNELS + c];
}"""

    def c_int8(self, spec: ModelSpec | None = None) -> str:
        return """void ${p}_rgba(const int8_t *state, int h, int w, float *rgba)
{
    long i, n = (long)h * (long)w;
    int c;
    for (i = 0; i < n; ++i)
        for (c = 0; c < 4; ++c) rgba[i * 4 + c] = ${p}_value(state, i, c);
}"""

    def predict(self, spec: ModelSpec, state: Tensor) -> Tensor:
        return state[:, :4]

    def agreement(self, a: Tensor, b: Tensor) -> float:  # the shape: which cells are visible
        return float(((a[:, 3] > 0.1) == (b[:, 3] > 0.1)).float().mean())


class MaskReadout(ReadoutEmitter):
    kind, id, verb, returns, out_param = "mask", 3, "mask", "void", "unsigned char *mask"
    doc = " *         mask[y*w + x] = 1 where the logit (channel ${P}_INPUT_CHANNELS) > 0, else 0."
    unit = "pixel"

    def c_float(self, spec: ModelSpec | None = None) -> str:
        return """void ${p}_mask(const float *state, int h, int w, unsigned char *mask)
{
    long i, n = (long)h * (long)w;
    for (i = 0; i < n; ++i) mask[i] = (unsigned char)(state[i * ${P}_CHANNELS + ${P}_INPUT_CHANNELS] > 0.0f);
}"""  # noqa: E501

    def c_int8(self, spec: ModelSpec | None = None) -> str:
        return """void ${p}_mask(const int8_t *state, int h, int w, unsigned char *mask)
{
    long i, n = (long)h * (long)w;
    for (i = 0; i < n; ++i) mask[i] = (unsigned char)(${p}_value(state, i, ${P}_INPUT_CHANNELS) > 0.0f);
}"""  # noqa: E501

    def predict(self, spec: ModelSpec, state: Tensor) -> Tensor:
        return state[:, spec.config.input_channels] > 0


class VoteReadout(ReadoutEmitter):
    kind, id, verb, returns, out_param = "vote", 1, "classify", "int", "float *scores"
    doc = (
        " *         majority vote of the per-cell argmax over the logit channels\n"
        " *         ${P}_INPUT_CHANNELS .. ${P}_INPUT_CHANNELS + ${P}_CLASSES - 1\n"
        " *         (only cells whose image channel 0 > ${P}_VOTE_THRESHOLD\n"
        " *         if ${P}_VOTE_MASKED); ties -> lowest class.\n" + _CLASSIFY_DOC + "counts."
    )
    classes = True

    def with_head(self, task: str) -> str:
        return HeadReadout.kind

    _BODY = """{
    long counts[${P}_CLASSES];
    long i, n = (long)h * (long)w;
    int k, best = 0;
    for (k = 0; k < ${P}_CLASSES; ++k) counts[k] = 0;
    for (i = 0; i < n; ++i) {
        $logits
        int arg = 0;
#if ${P}_VOTE_MASKED
        if (!($image0 > ${P}_VOTE_THRESHOLD)) continue;
#endif
        for (k = 1; k < ${P}_CLASSES; ++k)
            if ($logit_k > $logit_arg) arg = k;
        counts[arg] += 1;
    }
    for (k = 0; k < ${P}_CLASSES; ++k) {
        if (counts[k] > counts[best]) best = k;
        if (scores) scores[k] = (float)counts[k];
    }
    return best;
}"""

    def c_float(self, spec: ModelSpec | None = None) -> str:
        body = Template(self._BODY).safe_substitute(
            logits="const float *logit = state + i * ${P}_CHANNELS + ${P}_INPUT_CHANNELS;",
            image0="state[i * ${P}_CHANNELS]",
            logit_k="logit[k]",
            logit_arg="logit[arg]",
        )
        return f"{self.signature('${p}')}\n{body}"

    def c_int8(self, spec: ModelSpec | None = None) -> str:
        body = Template(self._BODY).safe_substitute(
            logits="const long cell = i;",
            image0="${p}_value(state, cell, 0)",
            logit_k="${p}_value(state, cell, ${P}_INPUT_CHANNELS + k)",
            logit_arg="${p}_value(state, cell, ${P}_INPUT_CHANNELS + arg)",
        )
        return f"{self.signature('${p}', 'int8_t')}\n{body}"

    def predict(self, spec: ModelSpec, state: Tensor) -> Tensor:
        n_in, n_out = spec.config.input_channels, spec.config.output_channels
        logits = state[:, n_in : n_in + n_out]  # (B, K, H, W)
        onehot = F.one_hot(logits.argmax(1), n_out).permute(0, 3, 1, 2).float()  # (B, K, H, W)
        if spec.threshold is not None:
            onehot = onehot * (state[:, :1] > spec.threshold).float()
        return onehot.sum(dim=(2, 3)).argmax(1)


class HeadReadout(ReadoutEmitter):
    kind, id, verb, returns, out_param = "head", 2, "classify", "int", "float *scores"
    doc = (
        " *         linear head on the spatial mean of the hidden channels; returns its argmax.\n"
        + _CLASSIFY_DOC
        + "logits."
    )
    classes = True

    _BODY = """{
    float mean[${P}_HIDDEN_CHANNELS];
    float logits[${P}_CLASSES];
    long i, n = (long)h * (long)w;
    int c, k, best = 0;
    for (c = 0; c < ${P}_HIDDEN_CHANNELS; ++c) mean[c] = 0.0f;
    for (i = 0; i < n; ++i)
        for (c = 0; c < ${P}_HIDDEN_CHANNELS; ++c)
            mean[c] += $hidden_c;
    for (c = 0; c < ${P}_HIDDEN_CHANNELS; ++c) mean[c] /= (float)n;
    for (k = 0; k < ${P}_CLASSES; ++k) {
        float acc = ${p}__head_b[k];
        for (c = 0; c < ${P}_HIDDEN_CHANNELS; ++c) acc += ${p}__head_w[k * ${P}_HIDDEN_CHANNELS + c] * mean[c];
        logits[k] = acc;
        if (scores) scores[k] = acc;
        if (acc > logits[best]) best = k;
    }
    return best;
}"""  # noqa: E501

    # model.head_hidden = N: the logits read a hidden layer of N ReLU units of the mean
    _MLP_BODY = """{
    float mean[${P}_HIDDEN_CHANNELS];
    float hid[$n_hidden];
    float logits[${P}_CLASSES];
    long i, n = (long)h * (long)w;
    int c, j, k, best = 0;
    for (c = 0; c < ${P}_HIDDEN_CHANNELS; ++c) mean[c] = 0.0f;
    for (i = 0; i < n; ++i)
        for (c = 0; c < ${P}_HIDDEN_CHANNELS; ++c)
            mean[c] += $hidden_c;
    for (c = 0; c < ${P}_HIDDEN_CHANNELS; ++c) mean[c] /= (float)n;
    for (j = 0; j < $n_hidden; ++j) {
        float acc = ${p}__head_b1[j];
        for (c = 0; c < ${P}_HIDDEN_CHANNELS; ++c) acc += ${p}__head_w1[j * ${P}_HIDDEN_CHANNELS + c] * mean[c];
        hid[j] = acc > 0.0f ? acc : 0.0f;
    }
    for (k = 0; k < ${P}_CLASSES; ++k) {
        float acc = ${p}__head_b[k];
        for (j = 0; j < $n_hidden; ++j) acc += ${p}__head_w[k * $n_hidden + j] * hid[j];
        logits[k] = acc;
        if (scores) scores[k] = acc;
        if (acc > logits[best]) best = k;
    }
    return best;
}"""  # noqa: E501

    def _body(self, spec: ModelSpec | None, hidden: str) -> str:
        if spec is None or spec.head_w1 is None:
            return Template(self._BODY).safe_substitute(hidden_c=hidden)
        n = str(spec.head_w1.shape[0])
        return Template(self._MLP_BODY).safe_substitute(hidden_c=hidden, n_hidden=n)

    def c_float(self, spec: ModelSpec | None = None) -> str:
        hidden = "state[i * ${P}_CHANNELS + ${P}_INPUT_CHANNELS + ${P}_OUTPUT_CHANNELS + c]"
        return f"{self.signature('${p}')}\n{self._body(spec, hidden)}"

    def c_int8(self, spec: ModelSpec | None = None) -> str:
        hidden = "${p}_value(state, i, ${P}_INPUT_CHANNELS + ${P}_OUTPUT_CHANNELS + c)"
        return f"{self.signature('${p}', 'int8_t')}\n{self._body(spec, hidden)}"

    def predict(self, spec: ModelSpec, state: Tensor) -> Tensor:
        assert spec.head_w is not None and spec.head_b is not None
        n_hidden_from = spec.config.input_channels + spec.config.output_channels
        mean = state[:, n_hidden_from:].mean(dim=(2, 3))  # (B, hidden)
        if spec.head_w1 is not None and spec.head_b1 is not None:  # an MLP head
            mean = torch.relu(
                mean @ torch.from_numpy(spec.head_w1).T + torch.from_numpy(spec.head_b1)
            )
        logits = mean @ torch.from_numpy(spec.head_w).T + torch.from_numpy(spec.head_b)
        return logits.argmax(1)


READOUTS: dict[str, ReadoutEmitter] = {
    r.kind: r for r in (RgbaReadout(), VoteReadout(), HeadReadout(), MaskReadout())
}


def emitter(kind: str) -> ReadoutEmitter:
    """The emitter of readout ``kind`` (a ModelSpec's or a task's ``readout``)."""
    try:
        return READOUTS[kind]
    except KeyError:
        raise ExportError(f"readout {kind!r} has no C emitter; known: {sorted(READOUTS)}") from None


def readout_defines(big: str) -> str:
    """The ``#define <NAME>_READOUT_<KIND> <id>`` lines, in id order."""
    rows = sorted(READOUTS.values(), key=lambda r: r.id)
    return "\n".join(f"#define {big}_READOUT_{r.kind.upper()} {r.id}" for r in rows)
