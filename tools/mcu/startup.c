/* Bare-metal start for QEMU's mps2-an386 (Cortex-M4): the vector table,
 * then zero .bss, open newlib's semihosted stdio, run main, exit through
 * semihosting with its status. Everything runs from the 4 MB SSRAM at 0
 * (mps2.ld), so nothing needs copying. */
#include <stdint.h>
#include <stdlib.h>

extern uint32_t __bss_start__, __bss_end__, __stack_top__;
extern void initialise_monitor_handles(void);
extern int main(void);

void reset_handler(void) {
  uint32_t *word;
  for (word = &__bss_start__; word < &__bss_end__; ++word) *word = 0;
  initialise_monitor_handles();
  exit(main());
}

static void fault_handler(void) { exit(3); }

__attribute__((section(".vectors"), used))
static const void *const vectors[4] = {
    &__stack_top__, (const void *)reset_handler,
    (const void *)fault_handler, (const void *)fault_handler};
