/* Test driver for a compact-state header (--state int8), as driver.c for the float one.
 *
 *   driver_compact IMAGES MASKS OUT B H W STEPS RNG_SEED
 *
 * OUT: per item: the final state's int8 codes (H*W*C bytes), then the readout:
 *      rgba: H*W*4 float32; vote/head: int32 class + CLASSES float32 scores; mask: H*W bytes.
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
    long cells;
    float *images;
    int8_t *state, *scratch;
    unsigned char *masks;
    FILE *f;
    nca_rng rng;
    if (argc != 9) {
        fprintf(stderr, "usage: driver_compact IMAGES MASKS OUT B H W STEPS RNG_SEED\n");
        return 2;
    }
    nb = atoi(argv[4]);
    h = atoi(argv[5]);
    w = atoi(argv[6]);
    steps = atoi(argv[7]);
    seed = atoi(argv[8]);
    cells = (long)h * w;
    images = (float *)read_all(argv[1], (long)nb * cells * (NCA_INPUT_CHANNELS > 0 ? NCA_INPUT_CHANNELS : 1) * 4);
    masks = (unsigned char *)read_all(argv[2], (long)nb * steps * cells);
    state = (int8_t *)malloc((size_t)NCA_STATE_BYTES(h, w));
    scratch = (int8_t *)malloc((size_t)NCA_SCRATCH_BYTES(w));
    f = fopen(argv[3], "wb");
    if (!state || !scratch || !f) return 2;
    for (b = 0; b < nb; ++b) {
        nca_rng_seed(&rng, (uint32_t)(seed + b));
        nca_seed(state, h, w, images ? images + (long)b * cells * NCA_INPUT_CHANNELS : NULL);
        nca_run(state, h, w, steps, masks ? masks + (long)b * steps * cells : NULL,
                seed >= 0 ? &rng : NULL, scratch);
        fwrite(state, 1, (size_t)NCA_STATE_BYTES(h, w), f);
#if NCA_READOUT == NCA_READOUT_RGBA
        {
            float *rgba = (float *)malloc((size_t)cells * 4 * sizeof(float));
            nca_rgba(state, h, w, rgba);
            fwrite(rgba, sizeof(float), (size_t)cells * 4, f);
            free(rgba);
        }
#elif NCA_READOUT == NCA_READOUT_MASK
        {
            unsigned char *mask = (unsigned char *)malloc((size_t)cells);
            nca_mask(state, h, w, mask);
            fwrite(mask, 1, (size_t)cells, f);
            free(mask);
        }
#else
        {
            float scores[NCA_CLASSES];
            int32_t cls = (int32_t)nca_classify(state, h, w, scores);
            fwrite(&cls, sizeof(cls), 1, f);
            fwrite(scores, sizeof(float), NCA_CLASSES, f);
        }
#endif
    }
    fclose(f);
    free(images);
    free(masks);
    free(state);
    free(scratch);
    return 0;
}
