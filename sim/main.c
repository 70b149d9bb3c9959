/* main.c: the moesim command line: parses the command word and dispatches. Placeholder. */
#include "moe.h"
#include <stdio.h>
int main(void) { puts("moesim"); return 0; }
