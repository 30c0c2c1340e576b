/*
 * lit — a string literal and its length as two arguments, the length computed by the compiler
 * (a hand-counted one once broke the framing of every later answer). Pure, header-only.
 */
#ifndef RC_LIT_H
#define RC_LIT_H

/* The literal s and its length without the NUL; "" s "" refuses anything but a literal. */
#define LIT(s) ("" s ""), (sizeof(s) - 1)
/* The length alone. */
#define LIT_LEN(s) (sizeof("" s "") - 1)

#endif
