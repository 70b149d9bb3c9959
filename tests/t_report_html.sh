#!/bin/sh
# t_report_html.sh: `moesim report DB --html DIR` writes one self-contained page (tests/run.sh
# runs it with MOESIM=<build>/moesim, from the repository root). Checked without a browser: the
# folder holds report.html alone, the temporary chart folder is gone, the page inlines as many
# SVG charts as `moesim plot` draws for the same database, names no http(s) URL and loads no
# file (no src= or href=). Checked in headless Chromium (Debian's chromium; skipped with a
# counted message when absent), run without a network (unshare -n when allowed, and a proxy
# and host rules that resolve nothing): the DOM it builds holds every chart as an SVG element
# with its drawing and every table with its rows (one row per configuration); a screenshot is
# not blank; and its network log shows no request made by the page, while a control page that
# names an external image does show one (so the check can fail).
NAME=t_report_html
. tests/lib.sh
make_tmp
export MOESIM_PLOTS="$REPO/plots"

if ! command -v gnuplot >/dev/null 2>&1 || ! command -v sqlite3 >/dev/null 2>&1; then
    skip 20 "gnuplot or sqlite3 is missing (make deps)"
    finish
fi

tiny_spec "$tmp/h.ini" h "topk switch ec" g c
sed -i 's/^seeds = 1$/seeds = 1 2/' "$tmp/h.ini"
db=$tmp/h.db
status "sweep" 0 "$tmp/out" "$MOESIM" run "$tmp/h.ini" --db "$db" --no-plots
nconf=$(q "$db" 'SELECT count(*) FROM over_seeds')
same "12 configurations" "$nconf" 12
mkdir "$tmp/t"
TMPDIR=$tmp/t status "report --html" 0 "$tmp/out" "$MOESIM" report "$db" --html "$tmp/page"
contains "report --html names its page" "$tmp/out" "$tmp/page/report.html"
page=$tmp/page/report.html
same "the folder holds the page alone" "$(ls "$tmp/page")" report.html
same "no temporary chart folder left" "$(ls -A "$tmp/t")" ""
"$MOESIM" plot "$db" --out "$tmp/charts" >/dev/null 2>&1
nsvg=$(ls "$tmp/charts"/*.svg | wc -l)
check "plot draws charts" test "$nsvg" -ge 6
same "every chart inline" "$(grep -o '<svg' "$page" | wc -l)" "$nsvg"
lacks "no http URL" "$page" "http://"
lacks "no https URL" "$page" "https://"
lacks "no src attribute" "$page" " src="
lacks "no href to another file" "$page" " href="
contains "the spec text" "$page" "[router.topk]"
contains "the provenance" "$page" "blas_library"

# ---- --where: the page shows the selection ----
status "report --html --where" 0 "$tmp/out" "$MOESIM" report "$db" --html "$tmp/page2" --where "router = 'topk'"
same "selection: topk rows only" "$(grep -c '<tr><td>topk</td>' "$tmp/page2/report.html")" 4
same "selection: no switch rows" "$(grep -c '<tr><td>switch</td>' "$tmp/page2/report.html")" 0

# ---- headless Chromium ----
# Chromium runs none of moesim's code: the sanitizer pass (an instrumented BUILD) leaves the
# rendering of its page to the plain pass, which renders the page of the same sweep.
case "$BUILD" in *asan*)
    skip 6 "Chromium runs no moesim code: the plain pass renders this page"; finish ;;
esac
CHROME=$(command -v chromium || command -v chromium-browser)
if [ -z "$CHROME" ]; then
    skip 7 "chromium is not installed (Debian: apt-get install chromium)"
    finish
fi
NS=
unshare -n true 2>/dev/null && NS="unshare -n"
chrome() { # chrome URL NETLOG ARGS...: headless, no network, nothing in the background
    url=$1 log=$2; shift 2
    HOME=$tmp timeout 180 $NS "$CHROME" --headless --no-sandbox --disable-gpu \
        --disable-dev-shm-usage --disable-background-networking --disable-component-update \
        --disable-sync --no-first-run --disable-default-apps --disable-extensions \
        --proxy-server=127.0.0.1:9 --host-resolver-rules='MAP * ~NOTFOUND' \
        --user-data-dir="$tmp/profile" --log-net-log="$log" "$@" "$url" 2>/dev/null
}
# the requests a page made: network log entries whose isolation key is the file:// page
page_requests() {
    python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
urls = set()
for e in d.get("events", []):
    p = e.get("params", {})
    if "file://" in str(p.get("network_isolation_key", "")):
        urls.add(e["source"]["id"])
print(len(urls))' "$1"
}
chrome "file://$page" "$tmp/net.json" --dump-dom >"$tmp/dom.html"
python3 - "$tmp/dom.html" "$nsvg" "$nconf" >"$tmp/domcheck" 2>&1 <<'EOF'
import sys
from html.parser import HTMLParser
class P(HTMLParser):
    def __init__(s):
        super().__init__(); s.svg = []; s.tables = []; s.depth_svg = 0
    def handle_starttag(s, tag, a):
        if tag == "svg": s.svg.append(0); s.depth_svg += 1
        elif s.depth_svg and tag in ("path", "text", "line", "rect", "polyline"): s.svg[-1] += 1
        if tag == "table": s.tables.append(0)
        if tag == "tr" and s.tables: s.tables[-1] += 1
    def handle_endtag(s, tag):
        if tag == "svg": s.depth_svg -= 1
p = P(); p.feed(open(sys.argv[1]).read())
nsvg, nconf = int(sys.argv[2]), int(sys.argv[3])
print("svgs", len(p.svg), "drawn", sum(1 for n in p.svg if n >= 20))
print("tables", len(p.tables), "config rows", p.tables[0] - 1 if p.tables else -1)
EOF
contains "DOM: every chart is an SVG element" "$tmp/domcheck" "svgs $nsvg drawn $nsvg"
contains "DOM: 3 tables, one row per configuration" "$tmp/domcheck" "tables 3 config rows $nconf"
same "the page made no request" "$(page_requests "$tmp/net.json")" 0
chrome "file://$page" "$tmp/net2.json" --screenshot="$tmp/shot.png" --window-size=1300,4000 >/dev/null
check "screenshot written" test -s "$tmp/shot.png"
if command -v identify >/dev/null 2>&1; then
    check "screenshot is not blank (many colours)" test "$(identify -format '%k' "$tmp/shot.png")" -gt 16
else
    skip 1 "identify (ImageMagick) is missing: screenshot not inspected"
fi
# control: a page naming an external image makes a request that the log shows
printf '<!DOCTYPE html><html><body><img src="http://example.invalid/x.png"></body></html>\n' >"$tmp/ext.html"
chrome "file://$tmp/ext.html" "$tmp/net3.json" --dump-dom >/dev/null
check "control: an external image is a request in the log" test "$(page_requests "$tmp/net3.json")" -ge 1
finish
