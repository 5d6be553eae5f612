#!/bin/sh
# Remove the staging directory $1 of the volume at /v; exit 0 if the volume then
# holds nothing at all.
cd /v && rm -rf -- "$1" && [ -z "$(ls -A /v)" ]
