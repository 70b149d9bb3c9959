/* fuzz_recorded.c: libFuzzer target for the recorded-metrics reader of `moesim compare` and the
 * `--record` round trip, through the very function main.c calls (moe_cmd_compare).
 *
 * An input is the text of a recorded metrics file (the format of sim/cmd_compare.c:
 * "moesim-metrics<TAB>1", "point<TAB>key", "<TAB>metric<TAB>value" lines). Steps:
 *   1. compare --record in.tsv out1.tsv
 *   2. when that succeeded: compare --record out1.tsv out2.tsv, then compare in.tsv out1.tsv
 *      --rtol 0 --atol 0 and compare out1.tsv in.tsv --rtol 0 --atol 0.
 * Seed corpus: tests/fuzz/corpus_recorded/ (inf, -inf, -0, null, the largest and smallest
 * doubles, subnormals, reordered metrics, CRLF line ends).
 *
 * Contracts (fuzz_cli.h for the status and message): an error names in.tsv and writes no
 * out1.tsv and no temporary; what --record writes reads back (step 2 succeeds), writing it again
 * gives the same bytes (out2 = out1), and both comparisons find no drift at zero tolerance (every
 * value read back equal, inf, -0, subnormals and 1.7976931348623157e308 included).
 */
#include "fuzz_cli.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *dir = fuzz_subdir("recorded");
    char in[600], out1[600], out2[600];
    snprintf(in, sizeof in, "%s/in.tsv", dir);
    snprintf(out1, sizeof out1, "%s/out1.tsv", dir);
    snprintf(out2, sizeof out2, "%s/out2.tsv", dir);
    fuzz_write(in, data, size);
    const char *rec1[] = {"compare", "--record", in, out1};
    int rc = fuzz_cli_run(moe_cmd_compare, 4, rec1);
    FUZZ_REQUIRE(!fuzz_has_temp(dir), "a temporary file left behind");
    if (rc) {
        FUZZ_REQUIRE(strstr(moe_errmsg(), in) != NULL, "a message that does not name the input");
        FUZZ_REQUIRE(access(out1, F_OK) != 0, "a failed --record wrote its output");
        return 0;
    }
    fuzz_record_round_trip(in, out1, out2);
    return 0;
}
