#!/bin/sh
# Issue a certificate to each listed user's machines and install it in a named store, with the
# certbus CLI (and jq). The key is made on each machine by its agent and never leaves it.
#
#   CERTBUS_URL=http://127.0.0.1:8080 \
#   ./issue_to_users_machines.sh users.txt user-client certs/source-control [pem|pkcs12|jks]
set -eu
users_file=$1 template=$2 store=$3 store_type=${4:-pem}

while read -r user; do
    [ -n "$user" ] || continue
    if ! person=$(certbus users show "$user" --json); then
        echo "$user: skipped" >&2
        continue
    fi
    email=$(printf '%s' "$person" | jq -r '.email // empty')
    for machine in $(printf '%s' "$person" | jq -r '.devices[]'); do
        store_id=$(certbus stores list --machine "$machine" --json |
                   jq -r --arg p "$store" 'map(select(.store_path == $p)) | .[0].id // empty')
        if [ -z "$store_id" ]; then
            store_id=$(certbus stores add "$machine" "$store" --type "$store_type" --json | jq -r .id)
        fi
        set -- --template "$template" --subject "CN=$user" --owner "$user" --alias "$template-$user"
        if [ -n "$email" ]; then set -- "$@" --san "email:$email"; fi
        certbus stores enroll "$store_id" "$@"
    done
done < "$users_file"
