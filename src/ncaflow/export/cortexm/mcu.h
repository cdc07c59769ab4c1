/* The board services of the QEMU MPS2 firmware (mcu.c) that main.c and startup.c share:
 * semihosting output and exit, the instruction-counting timer and the painted stack. With
 * this header neither of the two calls into the other's file for them. */
#ifndef MCU_H_SERVICES
#define MCU_H_SERVICES
#include <stdint.h>

#define STACK_PAINT 16384u /* bytes below the stack top painted at start-up */
#define PAINT 0xA5A5A5A5u

extern uint32_t __stack_top; /* link.ld: the end of RAM */

void mcu_write(const char *s);
void mcu_exit(int ok);
void mcu_timer_start(void);
uint32_t mcu_timer_ticks(void);
uint32_t mcu_stack_used(void);
void mcu_spin(uint32_t n);
#endif
