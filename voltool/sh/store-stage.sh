#!/bin/sh
# Stage a stored snapshot for a restore: the agent copies /snap/$2 (its data)
# into /v/$1, a new directory of the target, which stays 0700 until the swap.
# The copy's manifest is not needed (its digest is in the summary): dropped.
python3 -I -m voltool_agent copy --no-sync "/snap/$2" "/v/$1" > /dev/null
code=$?
if [ -d "/v/$1" ] && [ ! -L "/v/$1" ]; then chmod 700 "/v/$1" || code=3; fi
exit "$code"
