/* fuzz_npy.c: libFuzzer target for the .npy parser (moe_npy_parse, shared with moe_npy_read)
 * and the conversions. Besides crashes and leaks (ASan), it aborts when a contract breaks:
 * a success must give 0..4 dimensions whose product is count; a failure must leave no data
 * and record a message naming the input.
 *
 * Build and run (seed corpus tests/fuzz/corpus_npy/, made by tests/fixtures/npy/make.py;
 * new inputs go to the first folder, a scratch one):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isim tests/fuzz/fuzz_npy.c sim/npy.c \
 *       sim/error.c $(pkg-config --cflags --libs gsl) -o fuzz_npy
 *   mkdir -p /tmp/npy_scratch && ./fuzz_npy -max_total_time=60 /tmp/npy_scratch tests/fuzz/corpus_npy
 */
#include "moe.h"
#include "npy.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    moe_npy a;
    moe_clear_error();
    if (moe_npy_parse(data, size, "fuzz.npy", &a) != MOE_OK) {
        if (a.data != NULL || strstr(moe_errmsg(), "(fuzz.npy)") == NULL)
            abort();
        return 0;
    }
    size_t count = 1;
    if (a.ndim < 0 || a.ndim > 4 || a.dtype < MOE_F32 || a.dtype > MOE_I64 || !a.data)
        abort();
    for (int i = 0; i < a.ndim; i++)
        count *= a.shape[i];
    if (count != a.count)
        abort();
    /* touch every element through the conversions (ASan checks the bounds) */
    double *d = NULL;
    float *f = NULL;
    int64_t *iv = NULL;
    moe_clear_error();
    int is_float = a.dtype == MOE_F32 || a.dtype == MOE_F64;
    if ((moe_npy_as_double(&a, "fuzz", &d) == MOE_OK) != is_float)
        abort();
    moe_clear_error();
    (void)moe_npy_as_float(&a, "fuzz", &f); /* may refuse doubles beyond the float32 range */
    moe_clear_error();
    if ((moe_npy_as_int64(&a, "fuzz", &iv) == MOE_OK) == is_float)
        abort();
    free(d);
    free(f);
    free(iv);
    moe_npy_free(&a);
    return 0;
}
