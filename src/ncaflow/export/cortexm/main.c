/* One inference of an exported header on a Cortex-M under QEMU (or on the host with -DMCU_HOST):
 * seed from the image in input.h, MCU_STEPS steps with the header's PRNG, then print the final
 * state and the readout as hex lines; on the target also the timer ticks of every step, a
 * calibration of ticks against instructions and the stack high-water mark. */
#define NCA_IMPLEMENTATION
#include "nca.h"
#include "input.h" /* MCU_H, MCU_W, MCU_STEPS, MCU_SEED, mcu_image[] */

#ifdef MCU_HOST
#include <stdio.h>
static void mcu_write(const char *s) { fputs(s, stdout); }
#else
#include "mcu.h" /* the board services of mcu.c */
#endif

#ifdef NCA_STATE_INT8
typedef int8_t cell_t;
static int8_t state[MCU_H * MCU_W * NCA_CHANNELS];
static int8_t scratch[NCA_SCRATCH_BYTES(MCU_W)];
#else
typedef float cell_t;
static float a[MCU_H * MCU_W * NCA_CHANNELS], b[MCU_H * MCU_W * NCA_CHANNELS];
static unsigned char scratch[NCA_SCRATCH_BYTES(MCU_H, MCU_W) + 1];
#endif
#if NCA_READOUT == NCA_READOUT_RGBA
static float rgba[MCU_H * MCU_W * 4];
#elif NCA_READOUT == NCA_READOUT_MASK
static unsigned char mask[MCU_H * MCU_W];
#endif

static void put_hex(const char *tag, const void *data, unsigned long n)
{
    static const char digits[] = "0123456789abcdef";
    char line[8 + 2 * 64 + 2];
    const unsigned char *p = (const unsigned char *)data;
    unsigned long i = 0;
    while (i < n) {
        int k = 0, j;
        while (tag[k]) { line[k] = tag[k]; ++k; }
        line[k++] = ' ';
        for (j = 0; j < 64 && i < n; ++j, ++i) {
            line[k++] = digits[p[i] >> 4];
            line[k++] = digits[p[i] & 15];
        }
        line[k++] = '\n';
        line[k] = 0;
        mcu_write(line);
    }
}

static void put_u32(const char *tag, uint32_t v)
{
    unsigned char be[4];
    be[0] = (unsigned char)(v >> 24);
    be[1] = (unsigned char)(v >> 16);
    be[2] = (unsigned char)(v >> 8);
    be[3] = (unsigned char)v;
    put_hex(tag, be, 4);
}

int main(void)
{
    nca_rng rng;
    const cell_t *out;
    int t;
    (void)put_u32; /* unused on the host for mask and rgba readouts */
    nca_rng_seed(&rng, MCU_SEED);
#ifndef MCU_HOST
    mcu_timer_start();
    {
        const uint32_t t0 = mcu_timer_ticks();
        mcu_spin(1000000u);
        put_u32("spin", mcu_timer_ticks() - t0); /* 2,000,000 instructions */
    }
#endif
#ifdef NCA_STATE_INT8
    nca_seed(state, MCU_H, MCU_W, MCU_IMAGE);
    for (t = 0; t < MCU_STEPS; ++t) {
#ifndef MCU_HOST
        const uint32_t t0 = mcu_timer_ticks();
#endif
        nca_step(state, MCU_H, MCU_W, 0, &rng, scratch);
#ifndef MCU_HOST
        put_u32("step", mcu_timer_ticks() - t0);
#endif
    }
    out = state;
#else
    {
        float *src = a, *dst = b, *tmp;
        nca_seed(a, MCU_H, MCU_W, MCU_IMAGE);
        for (t = 0; t < MCU_STEPS; ++t) {
#ifndef MCU_HOST
            const uint32_t t0 = mcu_timer_ticks();
#endif
            nca_step(src, dst, MCU_H, MCU_W, 0, &rng, scratch);
#ifndef MCU_HOST
            put_u32("step", mcu_timer_ticks() - t0);
#endif
            tmp = src;
            src = dst;
            dst = tmp;
        }
        out = src;
    }
#endif
    put_hex("state", out, sizeof(cell_t) * (unsigned long)MCU_H * MCU_W * NCA_CHANNELS);
#if NCA_READOUT == NCA_READOUT_RGBA
    nca_rgba(out, MCU_H, MCU_W, rgba);
    put_hex("pred", rgba, sizeof(rgba));
#elif NCA_READOUT == NCA_READOUT_MASK
    nca_mask(out, MCU_H, MCU_W, mask);
    put_hex("pred", mask, sizeof(mask));
#else
    {
        float scores[NCA_CLASSES];
        int32_t cls = (int32_t)nca_classify(out, MCU_H, MCU_W, scores);
        put_u32("pred", (uint32_t)cls);
        put_hex("scores", scores, sizeof(scores));
    }
#endif
#ifndef MCU_HOST
    put_u32("stack", mcu_stack_used());
#endif
    mcu_write("end\n");
    return 0;
}
