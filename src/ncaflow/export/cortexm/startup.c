/* Bare-metal start-up for the QEMU MPS2 boards: vector table, .data/.bss set-up, FPU on,
 * stack painting (for the measured stack high-water mark), then main() and the semihosting
 * exit with its result. The board services are in mcu.c. */
#include <stdint.h>

#include "mcu.h"

extern uint32_t __data_load, __data_start, __data_end, __bss_start, __bss_end;
int main(void);
void reset_handler(void);

static void fault(void)
{
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__stack_top), reset_handler, fault, fault, fault, fault, fault, 0, 0, 0, 0,
    fault, fault, 0, fault, fault,
};

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
