/* fuzz_trace_popularity.c: libFuzzer target for the Fiddler popularity JSON reader
 * ({"expert_popularity": [[counts] per layer]}),
 * through moe_trace_load, moe_trace_info and the trace token source; the body and its
 * contracts are in fuzz_trace.h. Seed corpus: tests/fuzz/corpus_trace_popularity/; dictionary:
 * tests/fuzz/trace_popularity.dict. `make fuzz` builds and runs it.
 */
#include "fuzz_trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_trace_one(MOE_TRACE_POPULARITY, data, size);
}
