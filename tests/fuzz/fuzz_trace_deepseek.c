/* fuzz_trace_deepseek.c: libFuzzer target for the DeepSeek-V2-Lite CSV importer
 * (Layer ID,Batch Number,Token,Activated Expert IDs),
 * through moe_trace_load, moe_trace_info and the trace token source; the body and its
 * contracts are in fuzz_trace.h. Seed corpus: tests/fuzz/corpus_trace_deepseek/; dictionary:
 * tests/fuzz/trace_deepseek.dict. `make fuzz` builds and runs it.
 */
#include "fuzz_trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_trace_one(MOE_TRACE_DEEPSEEK, data, size);
}
