"""The template fields of the model options the float header carries
(``nca_runtime.h.in``): ``model.step_channel`` (the step's t / T fed to the update rule) and
``model.adaptive_steps`` (``<name>_run_adaptive``). Each field is empty without its option,
so the headers of other models stay as they were, byte for byte."""

from __future__ import annotations

from string import Template

from ncaflow.export.carrays import c_literal
from ncaflow.export.spec import ModelSpec

__all__ = ["adaptive_fields", "step_fields"]


def step_fields(spec: ModelSpec, p: str, big: str) -> dict[str, str]:
    """The template fields of ``model.step_channel`` (T): the bias term w_t * t / T that
    ``<p>_run`` feeds at step t (``<p>_set_step`` for a caller stepping by hand); all empty
    without it, so other headers stay as they were."""
    fields = dict.fromkeys(("step_define", "step_decl", "step_bias", "step_time", "step_code"), "")
    period = spec.config.step_channel
    if spec.step_w is None or not period:
        return fields
    fields["step_define"] = (
        f"\n#define {big}_STEP_CHANNEL {period} /* the MLP sees t / {period} at step t */"
    )
    fields["step_decl"] = f"\nvoid {p}_set_step(int t); /* before {p}_step: its t (0 first) */"
    fields["step_bias"] = f" acc += {p}__step_w[o] * {p}__time;"
    fields["step_time"] = f"\n        {p}_set_step(t);"
    fields["step_code"] = (
        f"\nstatic float {p}__time = 0.0f; /* t / {big}_STEP_CHANNEL of the running step */\n\n"
        f"void {p}_set_step(int t)\n{{\n"
        f"    {p}__time = (float)t / (float){big}_STEP_CHANNEL;\n}}\n"
    )
    return fields


_ADAPTIVE_RUN = """/* ${p}_run, stopping early (model.adaptive_steps, ncaflow.model.adaptive): after
 * step t (1, 2, ...) the change is the largest |new - old| of any updatable channel of any cell;
 * ${P}_ADAPTIVE_PATIENCE steps in a row with change < ${P}_ADAPTIVE_TOL, once
 * t >= ${P}_ADAPTIVE_MIN_STEPS, stop. At most `steps` steps; *taken (if not NULL) receives
 * the number run. fire_masks, if given, holds `steps` masks. */
float *${p}_run_adaptive(float *a, float *b, int h, int w, int steps,
                         const unsigned char *fire_masks, ${p}_rng *rng, unsigned char *scratch,
                         int *taken)
{
    long i, n = (long)h * (long)w;
    int t, c, quiet = 0;
    for (t = 0; t < steps; ++t) {
        float *tmp, change = 0.0f;${step_time}
        ${p}_step(a, b, h, w, fire_masks ? fire_masks + (long)t * h * w : 0, rng, scratch);
        for (i = 0; i < n; ++i)
            for (c = ${P}_INPUT_CHANNELS; c < ${P}_CHANNELS; ++c) {
                float e = b[i * ${P}_CHANNELS + c] - a[i * ${P}_CHANNELS + c];
                if (e < 0.0f) e = -e;
                if (e > change) change = e;
            }
        tmp = a;
        a = b;
        b = tmp;
        quiet = change < ${P}_ADAPTIVE_TOL ? quiet + 1 : 0;
        if (t + 1 >= ${P}_ADAPTIVE_MIN_STEPS && quiet >= ${P}_ADAPTIVE_PATIENCE) {
            t += 1;
            break;
        }
    }
    if (taken) *taken = t;
    return a;
}

"""


def adaptive_fields(spec: ModelSpec, p: str, big: str) -> dict[str, str]:
    """The template fields of ``model.adaptive_steps``: ``<p>_run_adaptive``, the same
    stopping rule as :mod:`ncaflow.model.adaptive`; all empty without it."""
    fields = dict.fromkeys(("adaptive_define", "adaptive_decl", "adaptive_code"), "")
    rule = spec.config.adaptive_steps
    if rule is None:
        return fields
    fields["adaptive_define"] = (
        f"\n#define {big}_ADAPTIVE_TOL {c_literal(rule.tol)} /* model.adaptive_steps */"
        f"\n#define {big}_ADAPTIVE_PATIENCE {rule.patience}"
        f"\n#define {big}_ADAPTIVE_MIN_STEPS {rule.min_steps}"
    )
    fields["adaptive_decl"] = (
        f"\nfloat *{p}_run_adaptive(float *a, float *b, int h, int w, int steps,"
        f"\n                         const unsigned char *fire_masks, {p}_rng *rng,"
        f"\n                         unsigned char *scratch, int *taken);"
    )
    step_time = step_fields(spec, p, big)["step_time"]
    fields["adaptive_code"] = Template(_ADAPTIVE_RUN).substitute(p=p, P=big, step_time=step_time)
    return fields
