/* Board services for the QEMU MPS2 boards: semihosting output and exit, the CMSDK APB
 * timer 0 (25 MHz) that, under -icount shift=0, counts instructions, the stack high-water
 * mark, and the memset/memcpy the compiler may call (the firmware has no C library). */
#include <stddef.h>
#include <stdint.h>

#include "mcu.h"

static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void mcu_write(const char *s) { semihost(0x04, s); } /* SYS_WRITE0 */

void mcu_exit(int ok)
{
    static const uint32_t reason[2] = {0x20024u, 0x20026u}; /* internal error, application exit */
    semihost(0x18, (const void *)(uintptr_t)reason[ok ? 1 : 0]); /* SYS_EXIT */
    for (;;) {
    }
}

#define TIMER0 ((volatile uint32_t *)0x40000000u) /* CTRL, VALUE, RELOAD */

void mcu_timer_start(void)
{
    TIMER0[0] = 0u;
    TIMER0[2] = 0xFFFFFFFFu;
    TIMER0[1] = 0xFFFFFFFFu;
    TIMER0[0] = 1u;
}

uint32_t mcu_timer_ticks(void) { return 0xFFFFFFFFu - TIMER0[1]; } /* counts down from reload */

/* Bytes of the painted stack region (startup.c paints it) written since start-up. */
uint32_t mcu_stack_used(void)
{
    const uint32_t *p = (const uint32_t *)((uintptr_t)&__stack_top - STACK_PAINT);
    uint32_t n = 0;
    while (n < STACK_PAINT / 4u && p[n] == PAINT) ++n;
    return STACK_PAINT - 4u * n;
}

/* exactly 2 * n + O(1) instructions (subs, bne), to calibrate timer ticks against instructions */
void mcu_spin(uint32_t n)
{
    __asm__ volatile("1: subs %0, %0, #1\n bne 1b" : "+r"(n) : : "cc");
}

void *memset(void *d, int c, size_t n)
{
    unsigned char *p = (unsigned char *)d;
    while (n--) *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = (unsigned char *)d;
    const unsigned char *q = (const unsigned char *)s;
    while (n--) *p++ = *q++;
    return d;
}
