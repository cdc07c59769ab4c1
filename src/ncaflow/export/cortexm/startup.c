/* Bare-metal start-up for the QEMU MPS2 boards: vector table, .data/.bss set-up, FPU on,
 * stack painting (for the measured stack high-water mark), semihosting output and exit,
 * and the CMSDK APB timer 0 (25 MHz) that, under -icount shift=0, counts instructions. */
#include <stddef.h>
#include <stdint.h>

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end, __stack_top;
int main(void);
void reset_handler(void);

#define STACK_PAINT 16384u /* bytes below the stack top painted at start-up */
#define PAINT 0xA5A5A5A5u

static void fault(void)
{
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__stack_top), reset_handler, fault, fault, fault, fault, fault, 0, 0, 0, 0,
    fault, fault, 0, fault, fault,
};

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

/* Bytes of the painted stack region that were written since start-up. */
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

void reset_handler(void)
{
    uint32_t *src = &__data_load, *dst = &__data_start, *sp;
    while (dst < &__data_end) *dst++ = *src++;
    for (dst = &__bss_start; dst < &__bss_end; ++dst) *dst = 0u;
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10, CP11 full access (FPU) */
    __asm__ volatile("dsb\n isb");
    /* paint the stack below the current frame (a few words are in use already) */
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (dst = (uint32_t *)((uintptr_t)&__stack_top - STACK_PAINT); dst < sp - 16; ++dst) *dst = PAINT;
    mcu_exit(main() == 0);
}
