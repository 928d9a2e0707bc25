#!/usr/bin/env bash
# Used by bench/run.sh: download with mdl the way a user would, timed as one unit.
#
#   mdl_fetch.sh LIST DEST LOG
#
# LIST holds "URL SHA256" per line. Every URL is queued first (`mdlctl --json add URL --dest
# DEST --sha256 HEX`), then `mdlctl wait ID...` follows them all to the end. Exits non-zero
# if an add fails, an add does not create a new job, or a job does not complete. Needs
# MDLCTL (the client binary) and MDL_SOCKET in the environment. Client output goes to LOG.
# With MDL_FETCH_PHASES=FILE it writes "SECONDS_TO_QUEUE_ALL SECONDS_TOTAL" there.
set -euo pipefail
t_start=$EPOCHREALTIME

list=$1 dest=$2 log=$3
: "${MDLCTL:?MDLCTL must name the mdlctl binary}"

ids=()
while read -r url sha; do
    [[ -n $url ]] || continue
    out=$("$MDLCTL" --json add "$url" --dest "$dest" --sha256 "$sha" 2>>"$log")
    if [[ ! $out =~ ^\{\"id\":([0-9]+) ]]; then
        echo "mdl_fetch: unexpected output from mdlctl add $url: ${out:0:300}" >&2
        exit 1
    fi
    ids+=("${BASH_REMATCH[1]}")
    if [[ ! $out =~ \"outcome\":\"created\" ]]; then
        echo "mdl_fetch: mdlctl add $url did not create a new job: ${out:0:300}" >&2
        exit 1
    fi
done <"$list"
t_added=$EPOCHREALTIME

if ! "$MDLCTL" wait "${ids[@]}" >>"$log" 2>&1; then
    echo "mdl_fetch: mdlctl wait failed; last lines of $log:" >&2
    tail -n 20 "$log" >&2
    exit 1
fi

if [[ -n ${MDL_FETCH_PHASES:-} ]]; then
    t_end=$EPOCHREALTIME
    awk -v a="$t_start" -v b="$t_added" -v c="$t_end" 'BEGIN { printf "%.3f %.3f\n", b - a, c - a }' >"$MDL_FETCH_PHASES"
fi
