#!/bin/sh
# Initialise a production stack, once (running it again changes nothing):
#   docker compose run --rm hub-init
# The bucket is made by the minio-init service this one waits for; here: the catalog's
# schema, the first admin and its token (printed once, to this terminal only).
set -eu
: "${INIT_ADMIN_ID:?set INIT_ADMIN_ID in the env file}"
: "${INIT_ADMIN_AGENCY:?set INIT_ADMIN_AGENCY in the env file}"
: "${INIT_ADMIN_AGENCY_NAME:?set INIT_ADMIN_AGENCY_NAME in the env file}"

# Schema: Alembic migrations where the installed blockhub has them (`blockhub db upgrade`);
# a blockhub without them creates its tables when it first opens the catalog (below).
if blockhub db --help >/dev/null 2>&1; then
    blockhub db upgrade
fi

blockhub agency add "$INIT_ADMIN_AGENCY" "$INIT_ADMIN_AGENCY_NAME"
if made=$(blockhub principal add "$INIT_ADMIN_ID" --agency "$INIT_ADMIN_AGENCY" --role admin 2>&1)
then
    echo "first admin $INIT_ADMIN_ID created; its token follows (store it now, it is not shown again)"
    blockhub token issue "$INIT_ADMIN_ID" --days 30 --label first-admin
elif printf '%s' "$made" | grep -q "principal '$INIT_ADMIN_ID' exists"; then
    echo "admin $INIT_ADMIN_ID exists already: no token issued (blockhub token issue $INIT_ADMIN_ID)"
else
    printf '%s\n' "$made" >&2  # the catalog down, a bad agency …: say so, fail
    exit 1
fi
