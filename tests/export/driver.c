/* Test driver for an exported header (compiled by tests/export/helpers.py).
 *
 *   driver IMAGES MASKS OUT B H W STEPS RNG_SEED
 *
 * IMAGES: B*H*W*C_in float32 (HWC per item) or "-" (growing).
 * MASKS:  B*STEPS*H*W bytes or "-" (then the header's PRNG, seeded RNG_SEED + b; RNG_SEED < 0: NULL).
 * OUT:    per item: the final state (H*W*C float32), then the readout:
 *         rgba: H*W*4 float32; vote/head: int32 class + CLASSES float32 scores; mask: H*W bytes.
 * With model.adaptive_steps (NCA_ADAPTIVE_TOL) it runs nca_run_adaptive (STEPS at most) and
 * prints each item's steps run to stdout.
 * Buffers are malloc'ed with their exact sizes so that valgrind and ASan see every overrun.
 */
#define NCA_IMPLEMENTATION
#include "nca.h"

#include <stdio.h>
#include <stdlib.h>

static void *read_all(const char *path, long n)
{
    FILE *f;
    void *buf;
    if (path[0] == '-') return NULL;
    f = fopen(path, "rb");
    buf = malloc((size_t)n);
    if (!f || !buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %ld bytes from %s\n", n, path);
        exit(2);
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv)
{
    int b, nb, h, w, steps, seed;
    long cells, state_floats;
    float *images, *a, *bb, *out;
    unsigned char *masks, *scratch;
    FILE *f;
    nca_rng rng;
    if (argc != 9) {
        fprintf(stderr, "usage: driver IMAGES MASKS OUT B H W STEPS RNG_SEED\n");
        return 2;
    }
    nb = atoi(argv[4]);
    h = atoi(argv[5]);
    w = atoi(argv[6]);
    steps = atoi(argv[7]);
    seed = atoi(argv[8]);
    cells = (long)h * w;
    state_floats = NCA_STATE_FLOATS(h, w);
    images = (float *)read_all(argv[1], (long)nb * cells * (NCA_INPUT_CHANNELS > 0 ? NCA_INPUT_CHANNELS : 1) * 4);
    masks = (unsigned char *)read_all(argv[2], (long)nb * steps * cells);
    a = (float *)malloc((size_t)NCA_STATE_BYTES(h, w));
    bb = (float *)malloc((size_t)NCA_STATE_BYTES(h, w));
    scratch = NCA_SCRATCH_BYTES(h, w) ? (unsigned char *)malloc((size_t)NCA_SCRATCH_BYTES(h, w)) : NULL;
    f = fopen(argv[3], "wb");
    if (!a || !bb || !f) return 2;
    for (b = 0; b < nb; ++b) {
        nca_rng_seed(&rng, (uint32_t)(seed + b));
        nca_seed(a, h, w, images ? images + (long)b * cells * NCA_INPUT_CHANNELS : NULL);
#ifdef NCA_ADAPTIVE_TOL
        {
            int taken = -1;
            out = nca_run_adaptive(a, bb, h, w, steps, masks ? masks + (long)b * steps * cells : NULL,
                                   seed >= 0 ? &rng : NULL, scratch, &taken);
            printf("%d\n", taken); /* the steps run, one line per item */
        }
#else
        out = nca_run(a, bb, h, w, steps, masks ? masks + (long)b * steps * cells : NULL,
                      seed >= 0 ? &rng : NULL, scratch);
#endif
        fwrite(out, sizeof(float), (size_t)state_floats, f);
#if NCA_READOUT == NCA_READOUT_RGBA
        {
            float *rgba = (float *)malloc((size_t)cells * 4 * sizeof(float));
            nca_rgba(out, h, w, rgba);
            fwrite(rgba, sizeof(float), (size_t)cells * 4, f);
            free(rgba);
        }
#elif NCA_READOUT == NCA_READOUT_MASK
        {
            unsigned char *mask = (unsigned char *)malloc((size_t)cells);
            nca_mask(out, h, w, mask);
            fwrite(mask, 1, (size_t)cells, f);
            free(mask);
        }
#else
        {
            float scores[NCA_CLASSES];
            int32_t cls = (int32_t)nca_classify(out, h, w, scores);
            fwrite(&cls, sizeof(cls), 1, f);
            fwrite(scores, sizeof(float), NCA_CLASSES, f);
        }
#endif
    }
    fclose(f);
    free(images);
    free(masks);
    free(a);
    free(bb);
    free(scratch);
    return 0;
}
