#!/bin/sh
# Find every certificate issued to the listed users or present on their machines and revoke
# it with a reason and a comment, with the certbus CLI (and jq).
#
#   CERTBUS_URL=http://127.0.0.1:8080 \
#   ./revoke_users_certificates.sh leavers.txt "left the division" [reason] [--dry-run]
set -eu
users_file=$1 comment=$2 reason=${3:-cessationOfOperation} dry_run=${4:-}

query=""
while read -r user; do
    [ -n "$user" ] || continue
    query="${query:+$query OR }Owner -eq \"$user\""
    for machine in $(certbus users show "$user" --json 2>/dev/null | jq -r '.devices[]'); do
        query="$query OR Device -eq \"$machine\""
    done
done < "$users_file"
[ -n "$query" ] || { echo "no users" >&2; exit 1; }

query="($query) AND Status -ne revoked"
certbus certs search "$query" --limit 10000 --json | jq -r '.items[] | "\(.id)\t\(.subject)"'
certbus certs revoke --query "$query" --reason "$reason" --comment "$comment" $dry_run
