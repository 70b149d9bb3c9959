/* fuzz_trace_flame.c: libFuzzer target for the FLAME-MoE csv(.gz) importer
 * (layer_id,token_id,expert_0..; gzip or plain),
 * through moe_trace_load, moe_trace_info and the trace token source; the body and its
 * contracts are in fuzz_trace.h. Seed corpus: tests/fuzz/corpus_trace_flame/; dictionary:
 * tests/fuzz/trace_flame.dict. `make fuzz` builds and runs it.
 */
#include "fuzz_trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_trace_one(MOE_TRACE_FLAME, data, size);
}
